//! The network allowlist of servers in enforce mode: `cgroup/connect4`,
//! `connect6`, `sendmsg4`, `sendmsg6`, `bind4`, `bind6` (and `recvmsg4`,
//! `recvmsg6` for DNS answers), attached once to the agent's cgroup subtree.
//!
//! A process outside an enforced server's cgroup pays one hash lookup. For a
//! server, a connect, an unconnected datagram or a bind is allowed only when
//! its destination (or local address) is in `NET_ALLOW`; anything else gets
//! EPERM (return 0). A UDP datagram or connect to port 53 (any address) is
//! steered to the server's own resolver in the agent (Cilium's FQDN design):
//! the resolver allows a declared name's addresses before the answer leaves
//! it, so the server never holds an address it may not yet connect to.

use agent_common::cgroup_net::{
    ALLOW_FIXED_BITS, ALLOW_MAX, AllowData, CgroupPolicy, DNS_ORIG_MAX, DnsOrig, KIND_BIND, KIND_OUT, POLICY_ANY_OUT,
    POLICY_MAX,
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, bpf_sock_addr},
    helpers::{bpf_get_current_cgroup_id, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LpmTrie, LruHashMap, lpm_trie::Key},
    programs::SockAddrContext,
};

/// Enforced servers by cgroup id.
#[map]
pub static NET_POLICY: HashMap<u64, CgroupPolicy> = HashMap::with_max_entries(POLICY_MAX, 0);

/// Allowed destinations and listen addresses (see `AllowData`).
#[map]
pub static NET_ALLOW: LpmTrie<AllowData, u32> = LpmTrie::with_max_entries(ALLOW_MAX, BPF_F_NO_PREALLOC);

/// Socket cookie -> where its steered DNS query was going.
#[map]
pub static DNS_ORIG: LruHashMap<u64, DnsOrig> = LruHashMap::with_max_entries(DNS_ORIG_MAX, 0);

const ALLOW: i32 = 1;
/// The kernel fails the call with EPERM.
const DENY: i32 = 0;
const SOCK_DGRAM: u32 = 2;
const DNS_PORT: u16 = 53;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// connect, or a datagram sent to an address.
    Out,
    Bind,
}

#[cgroup_sock_addr(connect4)]
pub fn cg_connect4(ctx: SockAddrContext) -> i32 {
    judge(&ctx, false, Op::Out)
}

#[cgroup_sock_addr(connect6)]
pub fn cg_connect6(ctx: SockAddrContext) -> i32 {
    judge(&ctx, true, Op::Out)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn cg_sendmsg4(ctx: SockAddrContext) -> i32 {
    judge(&ctx, false, Op::Out)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn cg_sendmsg6(ctx: SockAddrContext) -> i32 {
    judge(&ctx, true, Op::Out)
}

#[cgroup_sock_addr(bind4)]
pub fn cg_bind4(ctx: SockAddrContext) -> i32 {
    judge(&ctx, false, Op::Bind)
}

#[cgroup_sock_addr(bind6)]
pub fn cg_bind6(ctx: SockAddrContext) -> i32 {
    judge(&ctx, true, Op::Bind)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn cg_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore(&ctx, false);
    // recvmsg programs may only return 1.
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn cg_recvmsg6(ctx: SockAddrContext) -> i32 {
    restore(&ctx, true);
    ALLOW
}

/// The address of the context as IPv6 (IPv4 mapped).
///
/// Inlined into each program with `v6` constant: the verifier allows the
/// IPv6 fields only to IPv6 programs (and the IPv4 one only to IPv4), so no
/// program may even contain the other family's load.
///
/// SAFETY: `sa` is the context the kernel handed the program.
#[inline(always)]
unsafe fn address(sa: *const bpf_sock_addr, v6: bool) -> [u8; 16] {
    let mut a = [0u8; 16];
    unsafe {
        if v6 {
            let w = [
                core::ptr::read_volatile(&(*sa).user_ip6[0]),
                core::ptr::read_volatile(&(*sa).user_ip6[1]),
                core::ptr::read_volatile(&(*sa).user_ip6[2]),
                core::ptr::read_volatile(&(*sa).user_ip6[3]),
            ];
            for (i, x) in w.iter().enumerate() {
                a[i * 4..i * 4 + 4].copy_from_slice(&x.to_ne_bytes());
            }
        } else {
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..16].copy_from_slice(&core::ptr::read_volatile(&(*sa).user_ip4).to_ne_bytes());
        }
    }
    a
}

#[inline(always)]
fn judge(ctx: &SockAddrContext, v6: bool, op: Op) -> i32 {
    // SAFETY: a helper without arguments.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: read-only lookup; the value is copied out at once.
    let Some(pol) = (unsafe { NET_POLICY.get(cg) }).copied() else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands every sock_addr program a valid context;
    // user_port holds the port in network order in its low 16 bits.
    let (port_net, proto, sock_type, addr) = unsafe {
        (
            core::ptr::read_volatile(&(*sa).user_port) as u16,
            core::ptr::read_volatile(&(*sa).protocol) as u8,
            core::ptr::read_volatile(&(*sa).type_),
            address(sa, v6),
        )
    };
    let port = u16::from_be(port_net);
    if op == Op::Out && port == DNS_PORT && sock_type == SOCK_DGRAM && pol.dns_port != 0 {
        // SAFETY: as above; the stores are to the fields connect and
        // sendmsg programs may rewrite.
        unsafe { steer(ctx, sa, v6, addr, port_net, pol.dns_port) };
        return ALLOW;
    }
    // Already steered to the server's resolver: while one agent takes over
    // from another, both agents' programs run on the cgroup, and the second
    // sees the first one's rewrite.
    if op == Op::Out && pol.dns_port != 0 && port == pol.dns_port && steered_to(&addr) {
        return ALLOW;
    }
    if op == Op::Out && pol.flags & POLICY_ANY_OUT != 0 {
        return ALLOW;
    }
    // An ephemeral port names no listen address.
    if op == Op::Bind && port == 0 {
        return ALLOW;
    }
    let kind = if op == Op::Bind { KIND_BIND } else { KIND_OUT };
    // The fixed fields match whole: the exact protocol and port, then the
    // entries that allow any protocol or any port.
    for (proto, port) in [(proto, port_net), (proto, 0), (0, port_net), (0, 0)] {
        let key = Key::new(
            ALLOW_FIXED_BITS + 128,
            AllowData {
                cgroup: cg.to_ne_bytes(),
                kind,
                proto,
                port: port.to_ne_bytes(),
                addr,
            },
        );
        if NET_ALLOW.get(&key).is_some() {
            return ALLOW;
        }
    }
    DENY
}

/// Whether `addr` is where [`steer`] sends a query: 127.0.0.1 (IPv4-mapped
/// here) or ::1.
#[inline(always)]
fn steered_to(addr: &[u8; 16]) -> bool {
    const LO4: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];
    const LO6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    *addr == LO4 || *addr == LO6
}

/// Sends the DNS query to the server's resolver on loopback, remembering
/// where it was going.
///
/// SAFETY: `sa` is the context the kernel handed a connect or sendmsg program.
#[inline(always)]
unsafe fn steer(ctx: &SockAddrContext, sa: *mut bpf_sock_addr, v6: bool, addr: [u8; 16], port_net: u16, to: u16) {
    // SAFETY: the context is the helper's argument.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) };
    let orig = DnsOrig {
        addr,
        port: port_net.to_ne_bytes(),
        _pad: [0; 6],
    };
    // A full map evicts the least recently used: that answer's source then
    // stays the resolver's, and the library may ignore it (the query is
    // retried).
    let _ = DNS_ORIG.insert(cookie, orig, 0);
    let lo4 = u32::from_ne_bytes([127, 0, 0, 1]);
    unsafe {
        if v6 {
            let mapped = addr[..10] == [0u8; 10] && addr[10] == 0xff && addr[11] == 0xff;
            if mapped {
                // A dual-stack socket: the IPv4 listener, mapped.
                set6(sa, [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), lo4]);
            } else {
                set6(sa, [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])]);
            }
        } else {
            core::ptr::write_volatile(&mut (*sa).user_ip4, lo4);
        }
        core::ptr::write_volatile(&mut (*sa).user_port, u32::from(to.to_be()));
    }
}

/// Stores an IPv6 address word by word (the verifier allows 4-byte stores).
///
/// SAFETY: `sa` is the context of a program that may rewrite the address.
unsafe fn set6(sa: *mut bpf_sock_addr, w: [u32; 4]) {
    unsafe {
        core::ptr::write_volatile(&mut (*sa).user_ip6[0], w[0]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[1], w[1]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[2], w[2]);
        core::ptr::write_volatile(&mut (*sa).user_ip6[3], w[3]);
    }
}

/// Gives an answer from the resolver the source the query was sent to.
#[inline(always)]
fn restore(ctx: &SockAddrContext, v6: bool) {
    let sa = ctx.sock_addr;
    // SAFETY: a helper without arguments.
    let cg = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: read-only lookup, copied out.
    let Some(pol) = (unsafe { NET_POLICY.get(cg) }).copied() else {
        return;
    };
    // SAFETY: the context the kernel handed the program.
    let port = u16::from_be(unsafe { core::ptr::read_volatile(&(*sa).user_port) } as u16);
    if pol.dns_port == 0 || port != pol.dns_port {
        return;
    }
    // SAFETY: the context is the helper's argument.
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut _) };
    // SAFETY: read-only lookup, copied out.
    let Some(o) = (unsafe { DNS_ORIG.get(cookie) }).copied() else {
        return;
    };
    let a = o.addr;
    let word = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    // SAFETY: recvmsg programs may rewrite the source address and port.
    unsafe {
        if v6 {
            set6(sa, [word(0), word(4), word(8), word(12)]);
        } else {
            core::ptr::write_volatile(&mut (*sa).user_ip4, word(12));
        }
        core::ptr::write_volatile(&mut (*sa).user_port, u32::from(u16::from_ne_bytes(o.port)));
    }
}
