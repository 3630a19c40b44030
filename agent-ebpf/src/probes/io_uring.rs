//! Operations a watched process submits through an io_uring, from the BTF
//! tracepoint `io_uring_submit_req(struct io_kiocb *req)`, called once per
//! request as it is issued (from io_uring_enter, or from the ring's SQPOLL
//! kernel thread, which belongs to the submitting process: `current`'s tgid
//! is the process either way, and it shares the process's descriptors and
//! working directory). A ring does file and network I/O without a syscall
//! per operation; without this the syscall hooks never see it.
//!
//! Reported as a `Risky` record (see `agent_common::io_uring`): the opcode,
//! the descriptor and the submitter's user_data, read from the request
//! (`req->opcode`, `req->cqe`). The tracepoint fires in `io_submit_sqe`
//! after `io_init_req` ran the opcode's prep, which copied what the
//! operation names into the kernel: an openat's path (`io_open.filename`),
//! a connect's address (`req->async_data`), a send's destination
//! (`io_async_msghdr.msg.msg_name`). Those copies are what the operation
//! will use, so they are read; the submitter's memory, which a racing
//! thread could rewrite, never is.

use agent_common::{
    EventKind, SockAddr,
    abi::{AF_INET, AF_INET6, AF_UNIX, SOCKADDR_IN_ADDR, SOCKADDR_IN6_ADDR, SOCKADDR_PORT, SOCKADDR_UN_PATH},
    config::WATCH_PENDING,
    event::{SOCKADDR_ABSTRACT, SYS_PATH_RELATIVE, SYS_PATH_TRUNCATED},
    io_uring::{ARG_FD, ARG_OPCODE, ARG_OPEN_FLAGS, ARG_USER_DATA, IO_URING_OP_NR, OP_CONNECT, opens, sends},
    offsets::OFFSET_MISSING,
    probe_errors::{Probe, Reason},
};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    emit::probe_error,
    kernel::{read, read_at},
    maps::{offset, offsets, watched},
    probes::{file::base_dir, network::sock_of},
    record::{Call, Rec},
};

/// `REQ_F_FIXED_FILE` (bit 0 of `io_kiocb.flags`, the sqe's
/// `IOSQE_FIXED_FILE`): the fd indexes the ring's registered files, not
/// the process's descriptor table.
const REQ_F_FIXED_FILE: u64 = 1;

#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: BtfTracePointContext) -> u32 {
    if try_submit(&ctx).is_err() {
        probe_error(Probe::Risky, Reason::KernelRead);
    }
    0
}

/// `a + b`, missing when either is.
#[inline(always)]
fn at(a: u32, b: u32) -> u32 {
    if a == OFFSET_MISSING || b == OFFSET_MISSING {
        OFFSET_MISSING
    } else {
        a.wrapping_add(b)
    }
}

fn try_submit(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let Some(w) = watched((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return Ok(());
    };
    if w.flags & WATCH_PENDING != 0 {
        return Ok(());
    }
    let req: *const u8 = ctx.arg(0);
    let o = offsets();
    let opcode: u8 = read(req, &o.kiocb_opcode)?;
    let cqe = offset(&o.kiocb_cqe);
    let user_data: u64 = read_at(req, cqe.wrapping_add(offset(&o.cqe_user_data)))?;
    let fd: i32 = read_at(req, cqe.wrapping_add(offset(&o.cqe_fd)))?;
    let mut args = [0u64; 6];
    args[ARG_OPCODE] = opcode as u64;
    args[ARG_FD] = fd as i64 as u64;
    args[ARG_USER_DATA] = user_data;
    let st = Call {
        nr: IO_URING_OP_NR,
        server: w.server,
        event_flags: 0,
        args,
    };
    let Some(mut rec) = Rec::new(EventKind::Risky, &st, 0) else {
        return Ok(());
    };
    // Without the operand offsets (the agent warned at start-up) the
    // operation goes out with opcode, descriptor and user_data only.
    if offset(&o.kiocb_cmd) != OFFSET_MISSING {
        if opens(opcode) {
            open_operands(&mut rec, req);
        } else if opcode == OP_CONNECT || sends(opcode) {
            destination(&mut rec, req, opcode, fd);
        }
    }
    rec.send();
    Ok(())
}

/// An openat's or openat2's path (the kernel's `struct filename` copy),
/// flags and directory descriptor; a relative path's base resolved like a
/// syscall's.
#[inline(always)]
fn open_operands(rec: &mut Rec, req: *const u8) {
    let o = offsets();
    let cmd = offset(&o.kiocb_cmd);
    let dfd: i32 = read_at(req, at(cmd, offset(&o.open_dfd))).unwrap_or(-100);
    let flags: u64 = read_at(req, at(at(cmd, offset(&o.open_how)), offset(&o.how_flags))).unwrap_or(0);
    let ev = rec.ev();
    // io_cqe.fd is not set for an open (it needs no file): the dirfd is.
    ev.args[ARG_FD] = dfd as i64 as u64;
    ev.args[ARG_OPEN_FLAGS] = flags;
    let name: Option<*const u8> = read_at::<*const u8>(req, at(cmd, offset(&o.open_filename)))
        .and_then(|f| read(f, &o.filename_name))
        .ok();
    let Some(name) = name else {
        rec.error(Reason::KernelRead);
        return;
    };
    let n = rec.push_kernel_str(name, SYS_PATH_TRUNCATED);
    if n > 0 && rec.path1_first() != b'/' {
        match base_dir(dfd as i64) {
            Some(p) => {
                rec.ev().flags |= SYS_PATH_RELATIVE;
                rec.push_path_data(p);
            }
            None => rec.error(Reason::KernelRead),
        }
    }
}

/// Where a connect or a send goes, from the kernel's copy of the address.
#[inline(always)]
fn destination(rec: &mut Rec, req: *const u8, opcode: u8, fd: i32) {
    let o = offsets();
    let data: *const u8 = read(req, &o.kiocb_async_data).unwrap_or(core::ptr::null());
    if data.is_null() {
        rec.error(Reason::SockaddrUnreadable);
        return;
    }
    let (sa, len) = if opcode == OP_CONNECT {
        let len: i32 = read_at(req, at(offset(&o.kiocb_cmd), offset(&o.connect_addr_len))).unwrap_or(0);
        // io_connect_prep copies the address to the start of async_data
        // since upstream commit 3979840cd858 (2026, backported to stable
        // kernels), into `io_async_msghdr.addr` before: BTF cannot tell
        // which, the struct is the same. The old layout starts with a
        // kernel pointer or NULL (`vec.iovec`), 8-aligned, so its first two
        // bytes are never AF_UNIX, AF_INET or AF_INET6: the first bytes tell
        // the layouts apart without guessing at the kernel version.
        let first: u16 = read_at(data, 0).unwrap_or(0);
        if first == AF_INET || first == AF_INET6 || first == AF_UNIX {
            (data, len)
        } else {
            let off = offset(&o.async_msg_addr);
            if off == OFFSET_MISSING {
                rec.error(Reason::SockaddrUnreadable);
                return;
            }
            (data.wrapping_add(off as usize), len)
        }
    } else {
        // A send on a connected socket names no destination (msg_name
        // NULL): the connect named it.
        let msg = offset(&o.async_msg_msg);
        let name: *const u8 = read_at(data, at(msg, offset(&o.msghdr_name))).unwrap_or(core::ptr::null());
        if name.is_null() {
            return;
        }
        let len: i32 = read_at(data, at(msg, offset(&o.msghdr_namelen))).unwrap_or(0);
        (name, len)
    };
    let Some(mut addr) = kernel_sockaddr(rec, sa, len) else {
        rec.error(Reason::SockaddrUnreadable);
        return;
    };
    let fixed = read::<u64>(req, &o.kiocb_flags).is_ok_and(|f| f & REQ_F_FIXED_FILE != 0);
    if !fixed && let Some((_, ty)) = sock_of(fd as u32 as u64) {
        addr.sock_type = ty;
    }
    rec.ev().addr = addr;
}

/// A `struct sockaddr` of `len` bytes in kernel memory (a Unix path goes to
/// the record's path 1).
#[inline(always)]
fn kernel_sockaddr(rec: &mut Rec, p: *const u8, len: i32) -> Option<SockAddr> {
    if len < 2 {
        return None;
    }
    let family: u16 = read_at(p, 0).ok()?;
    let mut a = SockAddr {
        family,
        ..Default::default()
    };
    match family {
        AF_INET => {
            a.port = u16::from_be(read_at(p, SOCKADDR_PORT as u32).ok()?);
            let ip: [u8; 4] = read_at(p, SOCKADDR_IN_ADDR as u32).ok()?;
            a.addr[..4].copy_from_slice(&ip);
        }
        AF_INET6 => {
            a.port = u16::from_be(read_at(p, SOCKADDR_PORT as u32).ok()?);
            a.addr = read_at(p, SOCKADDR_IN6_ADDR as u32).ok()?;
        }
        AF_UNIX => {
            // sun_path: a path, or an abstract name after a NUL.
            let first: u8 = read_at(p, SOCKADDR_UN_PATH as u32).unwrap_or(0);
            let path = p.wrapping_add(SOCKADDR_UN_PATH);
            if first == 0 && len > 3 {
                a.flags |= SOCKADDR_ABSTRACT;
                rec.push_kernel_str(path.wrapping_add(1), SYS_PATH_TRUNCATED);
            } else {
                rec.push_kernel_str(path, SYS_PATH_TRUNCATED);
            }
        }
        _ => {}
    }
    Some(a)
}
