//! The table of every kernel structure field the probes read: a probe that
//! needs a new field adds one line here (and a member in
//! `agent_common::KernelOffsets`).

use agent_common::KernelOffsets;

/// Whether the agent can run without a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Start-up fails without it.
    Required,
    /// The feature using it is switched off, with a warning.
    Optional(&'static str),
}

pub type Slot = fn(&mut KernelOffsets) -> &mut u32;

/// The feature the io_uring fields serve (switched off, with its probe left
/// unattached, on a kernel without io_uring).
pub const IO_URING_OPS: &str = "io_uring operations";
/// What an io_uring operation names (an openat's path, a connect's or
/// send's address): the structures the opcodes' prep filled, private to
/// io_uring and renamed more often than the rest. Without them operations
/// are still reported, with opcode, descriptor and user_data.
pub const IO_URING_OPERANDS: &str = "io_uring operands";
/// What the kill layer and the credential catalogue identify files by.
pub const FILE_IDENTITY: &str = "files by device and inode (credentials under another name, the exec set)";

/// Every field the probes read: struct, member, where it goes, and whether the
/// agent can do without it.
pub const FIELDS: &[(&str, &str, Slot, Need)] = &[
    ("task_struct", "pid", |o| &mut o.task_pid, Need::Required),
    ("task_struct", "tgid", |o| &mut o.task_tgid, Need::Required),
    (
        "task_struct",
        "real_parent",
        |o| &mut o.task_real_parent,
        Need::Required,
    ),
    ("task_struct", "signal", |o| &mut o.task_signal, Need::Required),
    ("task_struct", "mm", |o| &mut o.task_mm, Need::Optional("exec argv")),
    (
        "task_struct",
        "exit_code",
        |o| &mut o.task_exit_code,
        Need::Optional("exit codes"),
    ),
    ("signal_struct", "live", |o| &mut o.signal_live, Need::Required),
    (
        "mm_struct",
        "arg_start",
        |o| &mut o.mm_arg_start,
        Need::Optional("exec argv"),
    ),
    (
        "mm_struct",
        "arg_end",
        |o| &mut o.mm_arg_end,
        Need::Optional("exec argv"),
    ),
    ("linux_binprm", "filename", |o| &mut o.binprm_filename, Need::Required),
    (
        "linux_binprm",
        "interp",
        |o| &mut o.binprm_interp,
        Need::Optional("script interpreters"),
    ),
    ("task_struct", "files", |o| &mut o.task_files, Need::Required),
    (
        "task_struct",
        "fs",
        |o| &mut o.task_fs,
        Need::Optional("working directories"),
    ),
    ("files_struct", "fdt", |o| &mut o.files_fdt, Need::Required),
    ("fdtable", "fd", |o| &mut o.fdt_fd, Need::Required),
    ("fdtable", "max_fds", |o| &mut o.fdt_max_fds, Need::Required),
    ("file", "f_path", |o| &mut o.file_path, Need::Required),
    ("file", "f_inode", |o| &mut o.file_inode, Need::Required),
    (
        "file",
        "private_data",
        |o| &mut o.file_private,
        Need::Optional("socket details"),
    ),
    ("path", "mnt", |o| &mut o.path_mnt, Need::Required),
    ("path", "dentry", |o| &mut o.path_dentry, Need::Required),
    ("dentry", "d_parent", |o| &mut o.dentry_parent, Need::Required),
    ("dentry", "d_name", |o| &mut o.dentry_name, Need::Required),
    ("qstr", "name", |o| &mut o.qstr_name, Need::Required),
    ("qstr", "len", |o| &mut o.qstr_len, Need::Required),
    ("dentry", "d_inode", |o| &mut o.dentry_inode, Need::Required),
    ("vfsmount", "mnt_root", |o| &mut o.vfsmount_root, Need::Required),
    ("mount", "mnt", |o| &mut o.mount_mnt, Need::Required),
    ("mount", "mnt_parent", |o| &mut o.mount_parent, Need::Required),
    ("mount", "mnt_mountpoint", |o| &mut o.mount_mountpoint, Need::Required),
    ("inode", "i_mode", |o| &mut o.inode_mode, Need::Required),
    (
        "inode",
        "i_nlink",
        |o| &mut o.inode_nlink,
        Need::Optional("fileless exec detection"),
    ),
    ("inode", "i_ino", |o| &mut o.inode_ino, Need::Optional("stdio capture")),
    (
        "fs_struct",
        "pwd",
        |o| &mut o.fs_pwd,
        Need::Optional("working directories"),
    ),
    (
        "linux_binprm",
        "file",
        |o| &mut o.binprm_file,
        Need::Optional("resolved exe paths"),
    ),
    (
        "socket",
        "type",
        |o| &mut o.socket_type,
        Need::Optional("socket details"),
    ),
    ("socket", "sk", |o| &mut o.socket_sk, Need::Optional("socket details")),
    (
        "sock_common",
        "skc_family",
        |o| &mut o.skc_family,
        Need::Optional("socket details"),
    ),
    (
        "sock_common",
        "skc_num",
        |o| &mut o.skc_num,
        Need::Optional("socket details"),
    ),
    (
        "sock_common",
        "skc_dport",
        |o| &mut o.skc_dport,
        Need::Optional("socket details"),
    ),
    (
        "sock_common",
        "skc_rcv_saddr",
        |o| &mut o.skc_rcv_saddr,
        Need::Optional("socket details"),
    ),
    (
        "sock_common",
        "skc_daddr",
        |o| &mut o.skc_daddr,
        Need::Optional("socket details"),
    ),
    (
        "sock_common",
        "skc_v6_rcv_saddr",
        |o| &mut o.skc_v6_rcv_saddr,
        Need::Optional("socket details"),
    ),
    (
        "sock_common",
        "skc_v6_daddr",
        |o| &mut o.skc_v6_daddr,
        Need::Optional("socket details"),
    ),
    ("pt_regs", "di", |o| &mut o.regs_di, Need::Required),
    ("pt_regs", "si", |o| &mut o.regs_si, Need::Required),
    ("pt_regs", "dx", |o| &mut o.regs_dx, Need::Required),
    ("pt_regs", "r10", |o| &mut o.regs_r10, Need::Required),
    ("pt_regs", "r8", |o| &mut o.regs_r8, Need::Required),
    ("pt_regs", "r9", |o| &mut o.regs_r9, Need::Required),
    ("pt_regs", "orig_ax", |o| &mut o.regs_orig_ax, Need::Required),
    (
        "pt_regs",
        "bx",
        |o| &mut o.regs_bx,
        Need::Optional("ia32 syscall arguments"),
    ),
    (
        "pt_regs",
        "cx",
        |o| &mut o.regs_cx,
        Need::Optional("ia32 syscall arguments"),
    ),
    (
        "pt_regs",
        "bp",
        |o| &mut o.regs_bp,
        Need::Optional("ia32 syscall arguments"),
    ),
    (
        "task_struct",
        "thread_info",
        |o| &mut o.task_thread_info,
        Need::Optional("ia32 syscall detection"),
    ),
    (
        "thread_info",
        "status",
        |o| &mut o.thread_info_status,
        Need::Optional("ia32 syscall detection"),
    ),
    (
        "inode",
        "i_private",
        |o| &mut o.inode_private,
        Need::Optional("pidfd_getfd target process"),
    ),
    (
        "pid",
        "numbers",
        |o| &mut o.pid_numbers,
        Need::Optional("pidfd_getfd target process"),
    ),
    (
        "upid",
        "nr",
        |o| &mut o.upid_nr,
        Need::Optional("pidfd_getfd target process"),
    ),
    (
        "io_kiocb",
        "opcode",
        |o| &mut o.kiocb_opcode,
        Need::Optional(IO_URING_OPS),
    ),
    ("io_kiocb", "cqe", |o| &mut o.kiocb_cqe, Need::Optional(IO_URING_OPS)),
    (
        "io_cqe",
        "user_data",
        |o| &mut o.cqe_user_data,
        Need::Optional(IO_URING_OPS),
    ),
    ("io_cqe", "fd", |o| &mut o.cqe_fd, Need::Optional(IO_URING_OPS)),
    (
        "io_kiocb",
        "cmd",
        |o| &mut o.kiocb_cmd,
        Need::Optional(IO_URING_OPERANDS),
    ),
    (
        "io_kiocb",
        "flags",
        |o| &mut o.kiocb_flags,
        Need::Optional(IO_URING_OPERANDS),
    ),
    (
        "io_kiocb",
        "async_data",
        |o| &mut o.kiocb_async_data,
        Need::Optional(IO_URING_OPERANDS),
    ),
    ("io_open", "dfd", |o| &mut o.open_dfd, Need::Optional(IO_URING_OPERANDS)),
    (
        "io_open",
        "filename",
        |o| &mut o.open_filename,
        Need::Optional(IO_URING_OPERANDS),
    ),
    ("io_open", "how", |o| &mut o.open_how, Need::Optional(IO_URING_OPERANDS)),
    (
        "open_how",
        "flags",
        |o| &mut o.how_flags,
        Need::Optional(IO_URING_OPERANDS),
    ),
    (
        "filename",
        "name",
        |o| &mut o.filename_name,
        Need::Optional(IO_URING_OPERANDS),
    ),
    (
        "io_async_msghdr",
        "addr",
        |o| &mut o.async_msg_addr,
        Need::Optional(IO_URING_OPERANDS),
    ),
    (
        "io_async_msghdr",
        "msg",
        |o| &mut o.async_msg_msg,
        Need::Optional(IO_URING_OPERANDS),
    ),
    (
        "msghdr",
        "msg_name",
        |o| &mut o.msghdr_name,
        Need::Optional(IO_URING_OPERANDS),
    ),
    (
        "msghdr",
        "msg_namelen",
        |o| &mut o.msghdr_namelen,
        Need::Optional(IO_URING_OPERANDS),
    ),
    (
        "io_connect",
        "addr_len",
        |o| &mut o.connect_addr_len,
        Need::Optional(IO_URING_OPERANDS),
    ),
    ("inode", "i_sb", |o| &mut o.inode_sb, Need::Optional(FILE_IDENTITY)),
    ("super_block", "s_dev", |o| &mut o.sb_dev, Need::Optional(FILE_IDENTITY)),
    ("task_struct", "comm", |o| &mut o.task_comm, Need::Required),
    ("task_struct", "cred", |o| &mut o.task_cred, Need::Required),
    ("cred", "uid", |o| &mut o.cred_uid, Need::Required),
    ("cred", "gid", |o| &mut o.cred_gid, Need::Required),
];
