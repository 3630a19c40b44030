//! Socket syscalls of watched processes, and DNS messages (to or from port 53).
//!
//! What the kernel holds is read from the socket (`struct sock_common`
//! through fd -> file -> socket -> sk), not from the caller's memory, which a
//! racing thread may rewrite while the call runs: the peer of a connect that
//! succeeded or is in progress, the local address of a bind that succeeded,
//! listen's and accept's addresses. Only what the socket does not record is
//! read from user memory at exit, and flagged `SYS_USER_MEMORY`: a failed
//! connect or bind, Unix socket paths, sendto destinations, where a datagram
//! came from. IPv4-mapped IPv6 addresses are left to userspace to normalise.

use agent_common::{
    EventKind, SockAddr,
    abi::{
        AF_INET, AF_INET6, AF_UNIX, DNS_PORT, MMSGHDR_MSG_LEN, SOCK_DGRAM, SOCK_STREAM, SOCKADDR_IN_ADDR,
        SOCKADDR_IN6_ADDR, SOCKADDR_PORT, SOCKADDR_UN_PATH,
    },
    event::{SOCKADDR_ABSTRACT, SYS_DATA_IN, SYS_PATH_TRUNCATED, SYS_USER_MEMORY},
    probe_errors::{Probe, Reason},
    syscalls::{Op, RECVMMSG, SENDMMSG, arg, lookup},
};
use aya_ebpf::helpers::bpf_probe_read_user;

use crate::{
    emit::probe_error,
    kernel::{fd_file, read},
    maps::offsets,
    probes::{kill, syscalls::record},
    record::{Call, Rec},
};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A DNS message over UDP is at most this long without EDNS; plenty for names.
const DNS_MAX: usize = 1232;
/// `-EINPROGRESS`: a non-blocking connect under way; the socket already
/// holds its destination.
const EINPROGRESS: i64 = -115;

/// The `struct sock *` behind socket fd `fd`, and the socket type.
#[inline(always)]
pub fn sock_of(fd: u64) -> Option<(*const u8, u16)> {
    let o = offsets();
    let file = fd_file(fd)?;
    let socket: *const u8 = read(file, &o.file_private).ok()?;
    let ty: u16 = read(socket, &o.socket_type).unwrap_or(0);
    let sk: *const u8 = read(socket, &o.socket_sk).ok()?;
    Some((sk, ty))
}

/// Reads a user `struct sockaddr` of `len` bytes (a Unix path goes to the
/// record's path 1); flags the record `SYS_USER_MEMORY`.
#[inline(always)]
pub fn user_sockaddr(rec: &mut Rec, ptr: u64, len: u64) -> Option<SockAddr> {
    if ptr == 0 || len < 2 {
        return None;
    }
    let p = ptr as *const u8;
    // SAFETY: bpf_probe_read_user checks the user pointer (as in every read
    // below); a bad one is an error, never a fault.
    let family: u16 = unsafe { bpf_probe_read_user(p as *const u16) }.ok()?;
    let mut a = SockAddr {
        family,
        ..Default::default()
    };
    match family {
        AF_INET => {
            // SAFETY: checked user reads, see above.
            let port: u16 = unsafe { bpf_probe_read_user(p.wrapping_add(SOCKADDR_PORT) as *const u16) }.ok()?;
            // SAFETY: checked user read.
            let ip: [u8; 4] =
                unsafe { bpf_probe_read_user(p.wrapping_add(SOCKADDR_IN_ADDR) as *const [u8; 4]) }.ok()?;
            a.port = u16::from_be(port);
            a.addr[..4].copy_from_slice(&ip);
        }
        AF_INET6 => {
            // SAFETY: checked user read.
            let port: u16 = unsafe { bpf_probe_read_user(p.wrapping_add(SOCKADDR_PORT) as *const u16) }.ok()?;
            a.port = u16::from_be(port);
            // SAFETY: checked user read.
            a.addr = unsafe { bpf_probe_read_user(p.wrapping_add(SOCKADDR_IN6_ADDR) as *const [u8; 16]) }.ok()?;
        }
        AF_UNIX => {
            // sun_path: a path, or an abstract name after a NUL.
            // SAFETY: checked user read.
            let first: u8 = unsafe { bpf_probe_read_user(p.wrapping_add(SOCKADDR_UN_PATH)) }.unwrap_or(0);
            if first == 0 && len > 3 {
                a.flags |= SOCKADDR_ABSTRACT;
                rec.push_user_str(ptr + SOCKADDR_UN_PATH as u64 + 1, false, SYS_PATH_TRUNCATED);
            } else {
                rec.push_user_str(ptr + SOCKADDR_UN_PATH as u64, false, SYS_PATH_TRUNCATED);
            }
        }
        _ => {}
    }
    rec.ev().flags |= SYS_USER_MEMORY;
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

/// The kill layer: an enforced server's connect outside its allowlist dies
/// before it returns (the handshake may be done; no byte is sent).
#[inline(always)]
fn kill_connect(rec: &mut Rec, server: u32, addr: &SockAddr) {
    let flags = kill::flags(server);
    if flags == 0 {
        return;
    }
    let proto = match addr.sock_type {
        SOCK_STREAM => IPPROTO_TCP,
        SOCK_DGRAM => IPPROTO_UDP,
        _ => 0,
    };
    if kill::connect_outside(server, flags, addr, proto) {
        rec.ev().header.flags |= kill::kill_current();
    }
}

/// Sends a DNS record for a message to or from `server` (`user`: that
/// address came from the caller's memory).
#[inline(always)]
fn dns(st: &Call, ret: i64, server: SockAddr, buf: u64, incoming: bool, user: bool) {
    let Some(mut rec) = record(EventKind::Dns, st, ret) else {
        return;
    };
    rec.ev().addr = server;
    if incoming {
        rec.ev().flags |= SYS_DATA_IN;
    }
    if user {
        rec.ev().flags |= SYS_USER_MEMORY;
    }
    let len = ret as u64;
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
    // SAFETY: bpf_probe_read_user checks the user pointer (here and below).
    let name: u64 = unsafe { bpf_probe_read_user(p) }.ok()?;
    // SAFETY: checked user read.
    let namelen: u32 = unsafe { bpf_probe_read_user(p.wrapping_add(1) as *const u32) }.ok()?;
    // SAFETY: checked user read.
    let iov: u64 = unsafe { bpf_probe_read_user(p.wrapping_add(2)) }.ok()?;
    // SAFETY: checked user read.
    let iovlen: u64 = unsafe { bpf_probe_read_user(p.wrapping_add(3)) }.ok()?;
    if iov == 0 || iovlen == 0 {
        return Some((name, namelen as u64, 0, 0));
    }
    // The first iovec read whole (a zeroed array first would be a memset
    // subprogram call).
    // SAFETY: checked user read.
    let v: [u64; 2] = unsafe { bpf_probe_read_user(iov as *const [u64; 2]) }.ok()?;
    Some((name, namelen as u64, v[0], v[1]))
}

pub fn on_exit(st: &Call, ret: i64) {
    let Some(sc) = lookup(st.nr) else {
        return;
    };
    let a = &st.args;
    let fd = arg(a, sc.fd);
    match sc.op {
        Op::Connect | Op::Bind => {
            let Some(mut rec) = record(EventKind::Net, st, ret) else {
                return;
            };
            let sock = sock_of(fd);
            let connect = sc.op == Op::Connect;
            // What the call did, as the socket records it: the peer of a
            // connect that succeeded or is under way, the local address of a
            // bind that succeeded. A failed call may leave an earlier
            // address there: then only the caller's memory tells.
            let done = ret == 0 || (connect && ret == EINPROGRESS);
            let from_sock = match sock {
                Some((sk, _)) if done => {
                    let addr = sock_addr(sk, connect);
                    let ip = addr.family == AF_INET || addr.family == AF_INET6;
                    (ip && addr.port != 0).then_some(addr)
                }
                _ => None,
            };
            let addr = match from_sock {
                Some(addr) => Some(addr),
                None => user_sockaddr(&mut rec, arg(a, sc.sockaddr), arg(a, sc.addrlen)),
            };
            let sock_type = sock.map(|(_, t)| t).unwrap_or(0);
            let Some(mut addr) = addr else {
                // Neither the socket nor the caller's memory says where: the
                // attempt is still reported, and counted.
                rec.error(Reason::SockaddrUnreadable);
                rec.ev().addr.sock_type = sock_type;
                rec.send();
                return;
            };
            addr.sock_type = sock_type;
            rec.ev().addr = addr;
            if connect {
                kill_connect(&mut rec, st.server, &addr);
            }
            rec.send();
        }
        Op::Listen => {
            let Some((sk, ty)) = sock_of(fd) else {
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
        Op::Accept => {
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
            rec.ev().local_port = sock_addr(sk, false).port;
            rec.ev().addr = addr;
            rec.send();
        }
        Op::Sendto => {
            let (name, namelen, buf, len) = if sc.msghdr.is_none() {
                (
                    arg(a, sc.sockaddr),
                    arg(a, sc.addrlen),
                    arg(a, sc.buf),
                    arg(a, sc.count),
                )
            } else {
                match msghdr(arg(a, sc.msghdr)) {
                    Some(m) => m,
                    None => {
                        probe_error(Probe::Net, Reason::UserRead);
                        return;
                    }
                }
            };
            let sock = sock_of(fd);
            let ty = sock.map(|(_, t)| t).unwrap_or(0);
            // A destination given with the call exists only in the caller's
            // memory; a connected socket's is the socket's.
            let dest = if name != 0 {
                let Some(mut rec) = record(EventKind::Net, st, ret) else {
                    return;
                };
                let Some(mut addr) = user_sockaddr(&mut rec, name, namelen) else {
                    rec.error(Reason::SockaddrUnreadable);
                    return;
                };
                addr.sock_type = ty;
                rec.ev().addr = addr;
                rec.send();
                Some(addr)
            } else {
                sock.map(|(sk, _)| sock_addr(sk, true))
            };
            // sendmmsg returns a message count: the first message's bytes
            // are its first buffer (a DNS query is one buffer).
            let sent = if st.nr == SENDMMSG && ret > 0 { len as i64 } else { ret };
            if let Some(d) = dest
                && ty == SOCK_DGRAM
                && d.port == DNS_PORT
                && sent > 0
            {
                dns(st, sent, d, buf, false, name != 0);
            }
        }
        Op::Recvfrom | Op::Recvmsg => {
            if ret <= 0 {
                return;
            }
            let Some((sk, ty)) = sock_of(fd) else {
                return;
            };
            if ty != SOCK_DGRAM {
                return;
            }
            let (name, namelen, buf) = if sc.msghdr.is_none() {
                // recvfrom's addrlen is a pointer to the length the kernel wrote.
                let addrlen_at = arg(a, sc.addrlen);
                let addrlen: u32 = if addrlen_at != 0 {
                    // SAFETY: checked user read.
                    unsafe { bpf_probe_read_user(addrlen_at as *const u32) }.unwrap_or(0)
                } else {
                    0
                };
                (arg(a, sc.sockaddr), addrlen as u64, arg(a, sc.buf))
            } else {
                match msghdr(arg(a, sc.msghdr)) {
                    Some((n, nl, b, _)) => (n, nl, b),
                    None => {
                        probe_error(Probe::Net, Reason::UserRead);
                        return;
                    }
                }
            };
            // An unconnected socket's sender is only in what the kernel
            // copied out to the caller.
            let mut from = sock_addr(sk, true);
            let mut user = false;
            if name != 0
                && namelen >= 4
                // SAFETY: checked user read.
                && let Ok(port) = unsafe { bpf_probe_read_user((name + SOCKADDR_PORT as u64) as *const u16) }
            {
                // SAFETY: checked user read.
                let family: u16 = unsafe { bpf_probe_read_user(name as *const u16) }.unwrap_or(0);
                from.family = family;
                from.port = u16::from_be(port);
                user = true;
                if family == AF_INET {
                    let at = (name + SOCKADDR_IN_ADDR as u64) as *const [u8; 4];
                    // SAFETY: checked user read.
                    let ip: [u8; 4] = unsafe { bpf_probe_read_user(at) }.unwrap_or([0; 4]);
                    from.addr = [0; 16];
                    from.addr[..4].copy_from_slice(&ip);
                } else if family == AF_INET6 {
                    let at = (name + SOCKADDR_IN6_ADDR as u64) as *const [u8; 16];
                    // SAFETY: checked user read.
                    from.addr = unsafe { bpf_probe_read_user(at) }.unwrap_or([0; 16]);
                }
            }
            // recvmmsg returns a message count: the first message's bytes
            // are in its `mmsghdr.msg_len`, which the kernel wrote.
            let got = if st.nr == RECVMMSG {
                let at = (arg(a, sc.msghdr) + MMSGHDR_MSG_LEN) as *const u32;
                // SAFETY: checked user read.
                unsafe { bpf_probe_read_user(at) }.map(i64::from).unwrap_or(0)
            } else {
                ret
            };
            if from.port == DNS_PORT && got > 0 {
                dns(st, got, from, buf, true, user);
            }
        }
        _ => {}
    }
}
