//! The in-kernel kill policy the agent hands the programs: which servers
//! are killed (enforce mode, not sandboxed by the wrapper) and the paths
//! that kill them. Shared so both sides build the same LPM keys.

/// Bytes of a `KILL_PATHS` key's data: a 4-byte scope (a server id,
/// big-endian, so the trie branches on it first; 0 for every server), then
/// the path.
pub const KILL_KEY_DATA: usize = 256;
/// Bytes of the scope at the start of a key's data.
pub const KILL_KEY_SCOPE: usize = 4;
/// Longest path a key holds. An exact entry ends with a NUL inside this
/// length (so it names paths of at most `KILL_PATH_MAX - 1` bytes); a prefix
/// entry has none and matches longer paths too.
pub const KILL_PATH_MAX: usize = KILL_KEY_DATA - KILL_KEY_SCOPE;

/// `KILL_PATHS` value, low byte: opening this path (successfully) kills.
pub const KILL_CREDENTIAL: u32 = 1;
/// `KILL_PATHS` value, low byte: a shell or interpreter; exec'd with a
/// socket on fd 0 or 1 it kills (a reverse shell). Scope 0.
pub const KILL_INTERPRETER: u32 = 2;
/// The class bits of a `KILL_PATHS` value; the rest is the catalogue kind.
pub const KILL_CLASS_MASK: u32 = 0xff;

/// `KILL_SERVERS` value: the server is killed for the violations the kernel decides.
pub const KILL_ENFORCED: u32 = 1;
/// `KILL_SERVERS` flag: the server's declared programs all resolved to
/// files (`KILL_INODES`, class [`KILL_PROGRAM`]): an exec of any other dies.
pub const KILL_EXEC_SET: u32 = 2;
/// `KILL_SERVERS` flag: the server's network allowlist is whole in
/// `NET_ALLOW` (scope [`net_scope`]): a connect elsewhere dies.
pub const KILL_NET_SET: u32 = 4;

/// `KillInode::class`: a credential file (the value is its catalogue kind).
pub const KILL_INODE_CREDENTIAL: u32 = 1;
/// `KillInode::class`: a program the server may exec.
pub const KILL_PROGRAM: u32 = 2;
/// Entries of the `KILL_INODES` map, all servers together.
pub const KILL_INODES_MAX: u32 = 32768;

/// A file as the kernel identifies it, in a server's scope: what a
/// credential or a declared program is whatever name reaches it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KillInode {
    /// The server id.
    pub scope: u32,
    /// [`KILL_INODE_CREDENTIAL`] or [`KILL_PROGRAM`].
    pub class: u32,
    /// `inode->i_ino`.
    pub ino: u64,
    /// `inode->i_sb->s_dev`, the kernel's encoding (major << 20 | minor).
    pub dev: u32,
    pub _pad: u32,
}

/// The kernel's `dev_t` encoding of a device number as `stat` returns it.
pub fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

/// The `AllowData::cgroup` bytes of a server's allowlist for the kill
/// layer's connect check: a range no cgroup id reaches (ids count up from
/// 1), so the cgroup programs and the kill layer share the map's layout.
pub fn net_scope(server: u32) -> u64 {
    0xffff_ffff_0000_0000 | server as u64
}

/// Number of entries of the `KILL_PATHS` trie and the `KILL_SERVERS` map.
pub const KILL_PATHS_MAX: u32 = 16384;
pub const KILL_SERVERS_MAX: u32 = 4096;

const _: () = assert!(core::mem::size_of::<KillInode>() == 24);

#[cfg(feature = "user")]
// SAFETY: repr(C) struct of integers without padding.
unsafe impl aya::Pod for KillInode {}

/// `KILL_PROBE` indexes: the tgid to kill (the enforce-check probe's
/// child), and the number of signals the probe program sent.
pub const KILL_PROBE_TARGET: u32 = 0;
pub const KILL_PROBE_SENT: u32 = 1;

/// The LPM key's data for `path` in `scope`, and its prefix length in bits:
/// exact (NUL-terminated) or a prefix. `None` when it does not fit.
pub fn key_data(scope: u32, path: &[u8], exact: bool) -> Option<([u8; KILL_KEY_DATA], u32)> {
    let n = path.len() + usize::from(exact);
    if n > KILL_PATH_MAX || path.is_empty() {
        return None;
    }
    let mut data = [0u8; KILL_KEY_DATA];
    data[..KILL_KEY_SCOPE].copy_from_slice(&scope.to_be_bytes());
    data[KILL_KEY_SCOPE..KILL_KEY_SCOPE + path.len()].copy_from_slice(path);
    Some((data, ((KILL_KEY_SCOPE + n) * 8) as u32))
}
