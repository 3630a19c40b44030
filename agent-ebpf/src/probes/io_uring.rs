//! Operations a watched process submits through an io_uring, from the BTF
//! tracepoint `io_uring_submit_req(struct io_kiocb *req)`, called once per
//! request as it is issued (from io_uring_enter, or from the ring's SQPOLL
//! kernel thread, which belongs to the submitting process: `current`'s tgid
//! is the process either way). A ring does file and network I/O without a
//! syscall per operation; without this the syscall hooks never see it.
//!
//! Reported as a `Risky` record (see `agent_common::io_uring`): the opcode,
//! the descriptor and the submitter's user_data, read from the request
//! (`req->opcode`, `req->cqe`). Paths and addresses stay in the submitter's
//! memory, where a racing thread could rewrite them: not read.

use agent_common::{
    EventKind,
    config::WATCH_PENDING,
    io_uring::{ARG_FD, ARG_OPCODE, ARG_USER_DATA, IO_URING_OP_NR},
    probe_errors::{Probe, Reason},
};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    emit::probe_error,
    kernel::{read, read_at},
    maps::{Stash, offset, offsets, watched},
    record::Rec,
};

#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: BtfTracePointContext) -> u32 {
    if try_submit(&ctx).is_err() {
        probe_error(Probe::Risky, Reason::KernelRead);
    }
    0
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
    let st = Stash {
        nr: IO_URING_OP_NR,
        server: w.server,
        args,
    };
    if let Some(mut rec) = Rec::new(EventKind::Risky, &st, 0) {
        rec.send();
    }
    Ok(())
}
