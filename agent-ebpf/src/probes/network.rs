//! Socket syscalls of watched processes, and DNS messages (to or from port 53).
//!
//! connect/bind/sendto/sendmsg read the address the process passed; listen
//! and accept read the socket's own addresses from `struct sock_common`.
//! IPv4-mapped IPv6 addresses are left to userspace to normalise.

use agent_common::{
    EventKind, SockAddr,
    event::{SYS_DATA_IN, SYS_PATH_TRUNCATED},
    syscalls::*,
};
use aya_ebpf::helpers::{bpf_probe_read_user, bpf_probe_read_user_buf};

use crate::{
    kernel::{fd_file, read},
    maps::{Stash, offsets},
    probes::syscalls::record,
    record::Rec,
};

const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCK_DGRAM: u16 = 2;
const DNS_PORT: u16 = 53;
/// A DNS message over UDP is at most this long without EDNS; plenty for names.
const DNS_MAX: usize = 1232;

/// The `struct sock *` behind socket fd `fd`, and the socket type.
#[inline(always)]
fn sock_of(fd: u64) -> Option<(*const u8, u16)> {
    let o = offsets();
    let file = fd_file(fd)?;
    let socket: *const u8 = read(file, &o.file_private).ok()?;
    let ty: u16 = read(socket, &o.socket_type).unwrap_or(0);
    let sk: *const u8 = read(socket, &o.socket_sk).ok()?;
    Some((sk, ty))
}

/// Reads a user `struct sockaddr` of `len` bytes.
#[inline(always)]
fn user_sockaddr(rec: &mut Rec, ptr: u64, len: u64) -> Option<SockAddr> {
    if ptr == 0 || len < 2 {
        return None;
    }
    let p = ptr as *const u8;
    let family: u16 = unsafe { bpf_probe_read_user(p as *const u16) }.ok()?;
    let mut a = SockAddr {
        family,
        ..Default::default()
    };
    match family {
        AF_INET => {
            a.port = u16::from_be(unsafe { bpf_probe_read_user(p.add(2) as *const u16) }.ok()?);
            let ip: [u8; 4] = unsafe { bpf_probe_read_user(p.add(4) as *const [u8; 4]) }.ok()?;
            a.addr[..4].copy_from_slice(&ip);
        }
        AF_INET6 => {
            a.port = u16::from_be(unsafe { bpf_probe_read_user(p.add(2) as *const u16) }.ok()?);
            a.addr = unsafe { bpf_probe_read_user(p.add(8) as *const [u8; 16]) }.ok()?;
        }
        AF_UNIX => {
            // sun_path: a path, or an abstract name after a NUL.
            let first: u8 = unsafe { bpf_probe_read_user(p.add(2)) }.unwrap_or(0);
            if first == 0 && len > 3 {
                a.port = 1; // marks "abstract"
                rec.push_user_str(ptr + 3, false, SYS_PATH_TRUNCATED);
            } else {
                rec.push_user_str(ptr + 2, false, SYS_PATH_TRUNCATED);
            }
        }
        _ => {}
    }
    Some(a)
}

/// The socket's local (`remote == false`) or peer address.
#[inline(always)]
fn sock_addr(sk: *const u8, remote: bool) -> SockAddr {
    let o = offsets();
    let family: u16 = read(sk, &o.skc_family).unwrap_or(0);
    let mut a = SockAddr {
        family,
        ..Default::default()
    };
    if remote {
        a.port = u16::from_be(read(sk, &o.skc_dport).unwrap_or(0));
    } else {
        a.port = read(sk, &o.skc_num).unwrap_or(0);
    }
    match family {
        AF_INET => {
            let field = if remote { &o.skc_daddr } else { &o.skc_rcv_saddr };
            let ip: [u8; 4] = read(sk, field).unwrap_or([0; 4]);
            a.addr[..4].copy_from_slice(&ip);
        }
        AF_INET6 => {
            let field = if remote { &o.skc_v6_daddr } else { &o.skc_v6_rcv_saddr };
            a.addr = read(sk, field).unwrap_or([0; 16]);
        }
        _ => {}
    }
    a
}

/// Sends a DNS record for a message to or from `server`.
#[inline(always)]
fn dns(st: &Stash, ret: i64, server: SockAddr, buf: u64, len: u64, incoming: bool) {
    let Some(mut rec) = record(EventKind::Dns, st, ret) else {
        return;
    };
    rec.ev().addr = server;
    if incoming {
        rec.ev().flags |= SYS_DATA_IN;
    }
    let n = if (len as usize) < DNS_MAX {
        len as usize
    } else {
        DNS_MAX
    };
    if rec.push_user_data(buf, n) > 0 {
        rec.send();
    }
}

/// First buffer of a `struct msghdr`: (msg_name, msg_namelen, iov_base, iov_len).
#[inline(always)]
fn msghdr(ptr: u64) -> Option<(u64, u64, u64, u64)> {
    let p = ptr as *const u64;
    let name: u64 = unsafe { bpf_probe_read_user(p) }.ok()?;
    let namelen: u32 = unsafe { bpf_probe_read_user(p.add(1) as *const u32) }.ok()?;
    let iov: u64 = unsafe { bpf_probe_read_user(p.add(2)) }.ok()?;
    let iovlen: u64 = unsafe { bpf_probe_read_user(p.add(3)) }.ok()?;
    if iov == 0 || iovlen == 0 {
        return Some((name, namelen as u64, 0, 0));
    }
    let mut v = [0u64; 2];
    unsafe {
        bpf_probe_read_user_buf(
            iov as *const u8,
            core::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, 16),
        )
    }
    .ok()?;
    Some((name, namelen as u64, v[0], v[1]))
}

pub fn on_exit(st: &Stash, ret: i64) {
    let a = st.args;
    match st.nr {
        CONNECT | BIND => {
            let Some(mut rec) = record(EventKind::Net, st, ret) else {
                return;
            };
            let Some(mut addr) = user_sockaddr(&mut rec, a[1], a[2]) else {
                return;
            };
            addr.sock_type = sock_of(a[0]).map(|(_, t)| t).unwrap_or(0);
            rec.ev().addr = addr;
            rec.send();
        }
        LISTEN => {
            let Some((sk, ty)) = sock_of(a[0]) else {
                return;
            };
            let Some(mut rec) = record(EventKind::Net, st, ret) else {
                return;
            };
            let mut addr = sock_addr(sk, false);
            addr.sock_type = ty;
            rec.ev().addr = addr;
            rec.send();
        }
        ACCEPT | ACCEPT4 => {
            if ret < 0 {
                return;
            }
            let Some((sk, ty)) = sock_of(ret as u64) else {
                return;
            };
            let Some(mut rec) = record(EventKind::Net, st, ret) else {
                return;
            };
            let mut addr = sock_addr(sk, true);
            addr.sock_type = ty;
            // The local port the connection came in on.
            rec.ev().offset = sock_addr(sk, false).port as u64;
            rec.ev().addr = addr;
            rec.send();
        }
        SENDTO | SENDMSG => {
            let (name, namelen, buf, _len) = if st.nr == SENDTO {
                (a[4], a[5], a[1], a[2])
            } else {
                match msghdr(a[1]) {
                    Some(m) => m,
                    None => return,
                }
            };
            let sock = sock_of(a[0]);
            let ty = sock.map(|(_, t)| t).unwrap_or(0);
            let dest = if name != 0 {
                let Some(mut rec) = record(EventKind::Net, st, ret) else {
                    return;
                };
                let Some(mut addr) = user_sockaddr(&mut rec, name, namelen) else {
                    return;
                };
                addr.sock_type = ty;
                rec.ev().addr = addr;
                rec.send();
                Some(addr)
            } else {
                sock.map(|(sk, _)| sock_addr(sk, true))
            };
            if let Some(d) = dest
                && ty == SOCK_DGRAM
                && d.port == DNS_PORT
                && ret > 0
            {
                dns(st, ret, d, buf, ret as u64, false);
            }
        }
        RECVFROM | RECVMSG => {
            if ret <= 0 {
                return;
            }
            let Some((sk, ty)) = sock_of(a[0]) else {
                return;
            };
            if ty != SOCK_DGRAM {
                return;
            }
            let (name, namelen, buf) = if st.nr == RECVFROM {
                let addrlen: u32 = if a[5] != 0 {
                    unsafe { bpf_probe_read_user(a[5] as *const u32) }.unwrap_or(0)
                } else {
                    0
                };
                (a[4], addrlen as u64, a[1])
            } else {
                match msghdr(a[1]) {
                    Some((n, nl, b, _)) => (n, nl, b),
                    None => return,
                }
            };
            let mut from = sock_addr(sk, true);
            if name != 0
                && namelen >= 4
                && let Ok(port) = unsafe { bpf_probe_read_user((name + 2) as *const u16) }
            {
                let family: u16 = unsafe { bpf_probe_read_user(name as *const u16) }.unwrap_or(0);
                from.family = family;
                from.port = u16::from_be(port);
                if family == AF_INET {
                    let ip: [u8; 4] = unsafe { bpf_probe_read_user((name + 4) as *const [u8; 4]) }.unwrap_or([0; 4]);
                    from.addr = [0; 16];
                    from.addr[..4].copy_from_slice(&ip);
                } else if family == AF_INET6 {
                    from.addr = unsafe { bpf_probe_read_user((name + 8) as *const [u8; 16]) }.unwrap_or([0; 16]);
                }
            }
            if from.port == DNS_PORT {
                dns(st, ret, from, buf, ret as u64, true);
            }
        }
        _ => {}
    }
}
