//! The kill layer: `bpf_send_signal(SIGKILL)` from the program that saw the
//! violation, for servers in enforce mode that the wrapper did not sandbox
//! (`KILL_SERVERS`). The signal is queued on the current task inside the
//! syscall (or the exec) and delivered before it returns to user space: the
//! process never runs another instruction, so it never uses the result. The
//! syscall itself has run (a file opened with O_CREAT exists; the exec'd
//! image is in place). Where each decision is taken:
//!
//! - open of a credential location: at sys_exit, on the path resolved from
//!   the opened `struct file` (the kernel object, not the caller's string);
//! - a shell or interpreter exec'd with a socket on fd 0 or 1, and a
//!   fileless exec (the executed file has no link): at `sched_process_exec`,
//!   on the binary really executed, before the new image's first instruction;
//! - the same credential under another name (a hardlink, a bind mount, a
//!   renamed directory): at sys_exit, on the opened file's (inode, device);
//! - an exec of a program outside the server's declared set (when every
//!   declared program resolved to a file): at `sched_process_exec`, on the
//!   executed file's (inode, device);
//! - a connect outside the allowlist (when the allowlist has no names): at
//!   sys_exit, on the peer the socket holds, against the cgroup programs'
//!   `NET_ALLOW` entries of the server's kill scope;
//! - ptrace, process_vm_readv/writev, init_module/finit_module, bpf: at
//!   sys_exit (the operation needs no kernel object to decide; entry would
//!   not stop it either: a pending SIGKILL does not abort these syscalls).
//!
//! Each kill marks its record `EVENT_KILLED`; userspace raises
//! `enforce.denied` (layer `kill`) from it.

use agent_common::{
    abi::{AF_INET, AF_INET6},
    cgroup_net::{ALLOW_FIXED_BITS, AllowData, KIND_OUT},
    event::{EVENT_KILLED, SockAddr},
    kill::{
        KILL_CLASS_MASK, KILL_EXEC_SET, KILL_INODE_CREDENTIAL, KILL_KEY_SCOPE, KILL_NET_SET, KILL_PATH_MAX,
        KILL_PROBE_SENT, KILL_PROBE_TARGET, KILL_PROGRAM, KillInode, net_scope,
    },
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_buf, generated::bpf_send_signal},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};

use crate::{
    kernel::read,
    maps::{KILL_INODES, KILL_KEY, KILL_PATHS, KILL_PROBE, KILL_SERVERS, offsets},
    probes::{cgroup_net::NET_ALLOW, network::sock_of},
};

const SIGKILL: u32 = 9;

/// Whether `server` is killed for its violations.
#[inline(always)]
pub fn enforced(server: u32) -> bool {
    // SAFETY: a presence test; the value is not kept.
    server != 0 && unsafe { KILL_SERVERS.get(server) }.is_some()
}

/// The `KILL_*` flags of `server` (0: not killed for anything).
#[inline(always)]
pub fn flags(server: u32) -> u32 {
    if server == 0 {
        return 0;
    }
    // SAFETY: read-only lookup, copied out.
    unsafe { KILL_SERVERS.get(server) }.copied().unwrap_or(0)
}

#[inline(always)]
fn inode_known(server: u32, class: u32, ino: u64, dev: u32) -> bool {
    let key = KillInode {
        scope: server,
        class,
        ino,
        dev,
        _pad: 0,
    };
    // SAFETY: a presence test; the value is not kept.
    unsafe { KILL_INODES.get(key) }.is_some()
}

/// Whether the file (`ino`, `dev`) is one of `server`'s credential files.
#[inline(always)]
pub fn credential_inode(server: u32, ino: u64, dev: u32) -> bool {
    ino != 0 && inode_known(server, KILL_INODE_CREDENTIAL, ino, dev)
}

/// Whether an exec of the file (`ino`, `dev`) kills an enforced server
/// whose `KILL_*` flags are `flags`: its declared programs resolved to
/// files, and this is none of them. An unreadable identity never kills.
#[inline(always)]
pub fn program_outside(server: u32, flags: u32, ino: u64, dev: u32) -> bool {
    flags & KILL_EXEC_SET != 0 && ino != 0 && !inode_known(server, KILL_PROGRAM, ino, dev)
}

/// Whether a connect of an enforced server whose `KILL_*` flags are
/// `flags` to `addr` (IP, port in host order, `proto` IPPROTO_*) lies
/// outside its allowlist: looked up as the cgroup programs do, in the
/// server's kill scope of `NET_ALLOW`.
#[inline(always)]
pub fn connect_outside(server: u32, flags: u32, addr: &SockAddr, proto: u8) -> bool {
    if flags & KILL_NET_SET == 0 || (addr.family != AF_INET && addr.family != AF_INET6) {
        return false;
    }
    let port_net = addr.port.to_be();
    // IPv4 as IPv4-mapped, as the allowlist stores it.
    let mut ip = addr.addr;
    if addr.family == AF_INET {
        ip = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ip[0], ip[1], ip[2], ip[3]];
    }
    let scope = net_scope(server).to_ne_bytes();
    for (proto, port) in [(proto, port_net), (proto, 0), (0, port_net), (0, 0)] {
        let key = aya_ebpf::maps::lpm_trie::Key::new(
            ALLOW_FIXED_BITS + 128,
            AllowData {
                cgroup: scope,
                kind: KIND_OUT,
                proto,
                port: port.to_ne_bytes(),
                addr: ip,
            },
        );
        if NET_ALLOW.get(&key).is_some() {
            return false;
        }
    }
    true
}

/// Queues SIGKILL for the current process; the `EVENT_KILLED` flag when
/// the kernel took it, 0 when not.
#[inline(always)]
pub fn kill_current() -> u32 {
    // SAFETY: the helper signals the current task; no memory is passed.
    if unsafe { bpf_send_signal(SIGKILL) } == 0 {
        EVENT_KILLED
    } else {
        0
    }
}

/// Whether `fd` of the current process is a TCP or UDP socket (AF_INET,
/// AF_INET6): a reverse shell's wire. A Unix socketpair, what Node-based
/// hosts give a server as its stdio, is not.
#[inline(always)]
pub fn inet_fd(fd: u64) -> bool {
    let Some((sk, _)) = sock_of(fd) else {
        return false;
    };
    let family: u16 = read(sk, &offsets().skc_family).unwrap_or(0);
    family == AF_INET || family == AF_INET6
}

/// The `KILL_*` class of the longest entry of `scope` that covers the `len`
/// bytes at `path` (kernel or map memory); 0 for none.
#[inline(always)]
pub fn path_class(scope: u32, path: *const u8, len: usize) -> u32 {
    let Some(key) = KILL_KEY.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch value, valid for the run and used by
    // nothing else meanwhile.
    let key = unsafe { &mut *key };
    let s = scope.to_be_bytes();
    key.data[0] = s[0];
    key.data[1] = s[1];
    key.data[2] = s[2];
    key.data[3] = s[3];
    // A path that fits is looked up with its NUL (exact entries match);
    // a longer one by its first KILL_PATH_MAX bytes (prefixes only).
    let (n, nul) = if len < KILL_PATH_MAX {
        (len, 1)
    } else {
        (KILL_PATH_MAX, 0)
    };
    if n == 0 {
        return 0;
    }
    // SAFETY: the helper checks the source; `n <= KILL_PATH_MAX` bytes fit
    // after the scope.
    if unsafe { bpf_probe_read_kernel_buf(path, &mut key.data[KILL_KEY_SCOPE..KILL_KEY_SCOPE + n]) }.is_err() {
        return 0;
    }
    if nul == 1 {
        key.data[(KILL_KEY_SCOPE + n) & 0xff] = 0;
    }
    key.prefix_len = ((KILL_KEY_SCOPE + n + nul) * 8) as u32;
    KILL_PATHS.get(&*key).map(|v| *v & KILL_CLASS_MASK).unwrap_or(0)
}

/// The enforce-check probe (not attached by the agent's load): kills the
/// tgid in `KILL_PROBE[KILL_PROBE_TARGET]` at its next syscall, so
/// userspace sees whether `bpf_send_signal` works on this kernel.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn kill_probe(_ctx: RawTracePointContext) -> i32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let target = KILL_PROBE.get(KILL_PROBE_TARGET).copied().unwrap_or(0);
    if target == 0 || target != tgid {
        return 0;
    }
    if kill_current() != 0
        && let Some(sent) = KILL_PROBE.get_ptr_mut(KILL_PROBE_SENT)
    {
        // SAFETY: an array slot, valid for the run; a racing increment only
        // loses a count, which is still non-zero.
        unsafe { *sent += 1 };
    }
    0
}
