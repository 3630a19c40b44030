//! The network allowlist of servers in enforce mode, as the cgroup
//! `sock_addr` programs read it (`agent-ebpf/src/probes/cgroup_net.rs`) and
//! the agent writes it (`agent/src/kernel/cgroup_net.rs`).
//!
//! Each enforced server runs in its own cgroup; the programs are attached
//! once, to the agent's subtree, and find the server by the current cgroup
//! id. An allowed destination is a longest-prefix-match key: the fixed
//! fields (cgroup, kind, protocol, port) always match whole, the address by
//! its CIDR prefix. IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so an
//! IPv6 socket connecting to a mapped address meets the same entries.

/// Servers in enforce mode at once (one policy entry each).
pub const POLICY_MAX: u32 = 1024;
/// Allowed destinations, all servers together (names resolved included).
pub const ALLOW_MAX: u32 = 16384;
/// Sockets whose DNS query was steered to the agent's resolver, remembered
/// until the answer is received (least recently used go first).
pub const DNS_ORIG_MAX: u32 = 4096;

/// `AllowData::kind`: a connect or a datagram sent.
pub const KIND_OUT: u8 = 1;
/// `AllowData::kind`: a bind (a listen address).
pub const KIND_BIND: u8 = 2;

/// `CgroupPolicy::flags`: every destination is allowed (`insecure_allow_all`).
pub const POLICY_ANY_OUT: u16 = 1;

/// A server's entry: its DNS steering and switches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupPolicy {
    /// The loopback port of this server's resolver (host order; 0: DNS is
    /// not steered and port 53 is judged like any other).
    pub dns_port: u16,
    pub flags: u16,
    pub _pad: u32,
}

/// The data of an allowlist key (`Key<AllowData>` of an LPM trie). Bytes
/// only: the key has no padding and matches byte by byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllowData {
    /// The server's cgroup id, native order (always matched whole).
    pub cgroup: [u8; 8],
    /// [`KIND_OUT`] or [`KIND_BIND`].
    pub kind: u8,
    /// IPPROTO_TCP, IPPROTO_UDP; 0: either.
    pub proto: u8,
    /// Network order; 0: any port.
    pub port: [u8; 2],
    /// IPv6; IPv4 as IPv4-mapped.
    pub addr: [u8; 16],
}

/// Bits of [`AllowData`] before the address: matched whole in every key.
pub const ALLOW_FIXED_BITS: u32 = 96;

/// Where a steered DNS query was going: restored as the source of the
/// answer, so the resolver library accepts it as from its nameserver.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsOrig {
    /// IPv6; IPv4 as IPv4-mapped.
    pub addr: [u8; 16],
    /// Network order.
    pub port: [u8; 2],
    pub _pad: [u8; 6],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<CgroupPolicy>() == 8);
    assert!(size_of::<AllowData>() == 28);
    assert!(offset_of!(AllowData, addr) * 8 == ALLOW_FIXED_BITS as usize);
    assert!(size_of::<DnsOrig>() == 24);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain repr(C) structs of integers and byte arrays without padding.
    unsafe impl aya::Pod for super::CgroupPolicy {}
    unsafe impl aya::Pod for super::AllowData {}
    unsafe impl aya::Pod for super::DnsOrig {}
}
