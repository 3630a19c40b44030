//! Operations submitted through an io_uring, reported from the
//! `io_uring_submit_req` BTF tracepoint: a ring does its I/O without a
//! syscall per operation, so the syscall hooks never see it.
//!
//! A submitted operation goes out as a `Risky` [`crate::event::SysEvent`]
//! whose `nr` is [`IO_URING_OP_NR`] and whose arguments are
//! [`ARG_OPCODE`], [`ARG_FD`] and [`ARG_USER_DATA`]. What the operation names
//! comes with it, read from the kernel's own copy made by the opcode's prep
//! before the tracepoint fires (never the submitter's memory, which another
//! thread could rewrite): an openat's path as path 1 (with [`ARG_OPEN_FLAGS`]),
//! a connect's or a send's destination as the record's address.

/// `SysEvent::nr` of an io_uring operation: io_uring_enter's number (the
/// syscall that submits; a ring polled by a kernel thread has none).
pub const IO_URING_OP_NR: u32 = 426;
/// Argument index of the opcode (`IORING_OP_*`).
pub const ARG_OPCODE: usize = 0;
/// Argument index of the descriptor the operation acts on (the sqe's `fd`;
/// an index into the registered files with `IOSQE_FIXED_FILE`).
pub const ARG_FD: usize = 1;
/// Argument index of the submitter's `user_data` tag.
pub const ARG_USER_DATA: usize = 2;

/// Argument index of an openat's or openat2's open flags (`open_how.flags`,
/// the kernel's copy made at prep).
pub const ARG_OPEN_FLAGS: usize = 3;

/// The opcodes whose operands are read (include/uapi/linux/io_uring.h).
pub const OP_SENDMSG: u8 = 9;
pub const OP_CONNECT: u8 = 16;
pub const OP_OPENAT: u8 = 18;
pub const OP_SEND: u8 = 26;
pub const OP_OPENAT2: u8 = 28;
pub const OP_SEND_ZC: u8 = 47;
pub const OP_SENDMSG_ZC: u8 = 48;

/// An open by path: the record's path 1 is the kernel's copy of the path
/// (`io_open.filename`), relative to the descriptor in [`ARG_FD`].
pub fn opens(opcode: u8) -> bool {
    opcode == OP_OPENAT || opcode == OP_OPENAT2
}

/// A send that may name its destination (the kernel's copy in the
/// request's `io_async_msghdr`; none on a connected socket).
pub fn sends(opcode: u8) -> bool {
    matches!(opcode, OP_SENDMSG | OP_SEND | OP_SEND_ZC | OP_SENDMSG_ZC)
}

/// `IORING_OP_*` numbers (include/uapi/linux/io_uring.h, a stable ABI) and
/// names, for the opcodes that move files or network data. The others are
/// reported with their number.
pub const OPCODES: &[(u8, &str)] = &[
    (1, "readv"),
    (2, "writev"),
    (4, "read_fixed"),
    (5, "write_fixed"),
    (9, "sendmsg"),
    (10, "recvmsg"),
    (13, "accept"),
    (16, "connect"),
    (18, "openat"),
    (22, "read"),
    (23, "write"),
    (26, "send"),
    (27, "recv"),
    (28, "openat2"),
    (30, "splice"),
    (35, "renameat"),
    (36, "unlinkat"),
    (37, "mkdirat"),
    (38, "symlinkat"),
    (39, "linkat"),
    (45, "socket"),
    (47, "send_zc"),
    (48, "sendmsg_zc"),
    (49, "read_multishot"),
    (56, "bind"),
    (57, "listen"),
];

/// Opcodes that name their target by path or create a descriptor (openat,
/// openat2, renameat, unlinkat, mkdirat, symlinkat, linkat, socket): the
/// kernel reads no descriptor for them at submission (`io_cqe.fd` stays 0;
/// a dirfd is kept in the operation's own data, not read).
const NO_FD: &[u8] = &[18, 28, 35, 36, 37, 38, 39, 45];

/// Whether the record's fd is the descriptor `opcode` acts on.
pub fn acts_on_fd(opcode: u8) -> bool {
    !NO_FD.contains(&opcode)
}

/// The name of an opcode, `None` for one outside [`OPCODES`].
pub fn opcode_name(opcode: u8) -> Option<&'static str> {
    OPCODES.iter().find(|(n, _)| *n == opcode).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_are_sorted_and_unique() {
        assert!(OPCODES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(opcode_name(18), Some("openat"));
        assert_eq!(opcode_name(16), Some("connect"));
        assert_eq!(opcode_name(0), None, "nop is not named");
        assert!(!acts_on_fd(18) && acts_on_fd(16));
    }
}
