//! Kernel structure field offsets, resolved by userspace from the running
//! kernel's BTF and handed to the programs as a read-only global.
//!
//! Rust eBPF has no CO-RE relocations: a program must never read a kernel
//! structure through offsets baked at build time. Every field a probe reads is a
//! member here; a probe adds a field by adding a member and its BTF path in
//! `agent::btf`.

/// Marks an offset the running kernel does not have (the feature using it is off).
pub const OFFSET_MISSING: u32 = u32::MAX;

/// Byte offsets of kernel structure fields. All `u32`, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.signal`
    pub task_signal: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `signal_struct.live` (an `atomic_t`)
    pub signal_live: u32,
    /// `mm_struct.arg_start`
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`
    pub mm_arg_end: u32,
    /// `linux_binprm.filename`
    pub binprm_filename: u32,
    /// `linux_binprm.interp`
    pub binprm_interp: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `task_struct.fs`
    pub task_fs: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.fd`
    pub fdt_fd: u32,
    /// `fdtable.max_fds`
    pub fdt_max_fds: u32,
    /// `file.f_path`
    pub file_path: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `file.private_data`
    pub file_private: u32,
    /// `path.mnt`
    pub path_mnt: u32,
    /// `path.dentry`
    pub path_dentry: u32,
    /// `dentry.d_parent`
    pub dentry_parent: u32,
    /// `dentry.d_name`
    pub dentry_name: u32,
    /// `qstr.name`
    pub qstr_name: u32,
    /// `qstr.len`
    pub qstr_len: u32,
    /// `dentry.d_inode`
    pub dentry_inode: u32,
    /// `vfsmount.mnt_root`
    pub vfsmount_root: u32,
    /// `mount.mnt`
    pub mount_mnt: u32,
    /// `mount.mnt_parent`
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`
    pub mount_mountpoint: u32,
    /// `inode.i_mode`
    pub inode_mode: u32,
    /// `inode.i_nlink`
    pub inode_nlink: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `fs_struct.pwd`
    pub fs_pwd: u32,
    /// `linux_binprm.file`
    pub binprm_file: u32,
    /// `socket.type`
    pub socket_type: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `sock_common.skc_family`
    pub skc_family: u32,
    /// `sock_common.skc_num`
    pub skc_num: u32,
    /// `sock_common.skc_dport`
    pub skc_dport: u32,
    /// `sock_common.skc_rcv_saddr`
    pub skc_rcv_saddr: u32,
    /// `sock_common.skc_daddr`
    pub skc_daddr: u32,
    /// `sock_common.skc_v6_rcv_saddr`
    pub skc_v6_rcv_saddr: u32,
    /// `sock_common.skc_v6_daddr`
    pub skc_v6_daddr: u32,
    /// `pt_regs.di`
    pub regs_di: u32,
    /// `pt_regs.si`
    pub regs_si: u32,
    /// `pt_regs.dx`
    pub regs_dx: u32,
    /// `pt_regs.r10`
    pub regs_r10: u32,
    /// `pt_regs.r8`
    pub regs_r8: u32,
    /// `pt_regs.r9`
    pub regs_r9: u32,
    /// `pt_regs.orig_ax`
    pub regs_orig_ax: u32,
    /// `pt_regs.bx` (first ia32 syscall argument)
    pub regs_bx: u32,
    /// `pt_regs.cx` (second ia32 syscall argument)
    pub regs_cx: u32,
    /// `task_struct.thread_info` (x86: embedded, first member)
    pub task_thread_info: u32,
    /// `thread_info.status` (`TS_COMPAT` while an ia32 syscall runs)
    pub thread_info_status: u32,
    /// `inode.i_private` (a pidfd's inode: its `struct pid *`)
    pub inode_private: u32,
    /// `pid.numbers` (`struct upid[]`, level 0 first)
    pub pid_numbers: u32,
    /// `upid.nr`
    pub upid_nr: u32,
    /// `pt_regs.bp` (sixth ia32 syscall argument)
    pub regs_bp: u32,
    /// `io_kiocb.opcode` (a u8)
    pub kiocb_opcode: u32,
    /// `io_kiocb.cqe`
    pub kiocb_cqe: u32,
    /// `io_cqe.user_data`
    pub cqe_user_data: u32,
    /// `io_cqe.fd` (the sqe's fd, kept until completion)
    pub cqe_fd: u32,
    /// `io_kiocb.cmd` (the operation's own data: `io_open`, `io_connect`...)
    pub kiocb_cmd: u32,
    /// `io_kiocb.flags` (`REQ_F_FIXED_FILE` is bit 0)
    pub kiocb_flags: u32,
    /// `io_kiocb.async_data` (what prep copied: a connect's or send's address)
    pub kiocb_async_data: u32,
    /// `io_open.dfd`
    pub open_dfd: u32,
    /// `io_open.filename` (a `struct filename *`, the kernel's copy of the path)
    pub open_filename: u32,
    /// `io_open.how` (a `struct open_how`)
    pub open_how: u32,
    /// `open_how.flags`
    pub how_flags: u32,
    /// `filename.name`
    pub filename_name: u32,
    /// `io_async_msghdr.addr` (a connect's address on kernels without upstream commit 3979840cd858)
    pub async_msg_addr: u32,
    /// `io_async_msghdr.msg` (a `struct msghdr`)
    pub async_msg_msg: u32,
    /// `msghdr.msg_name` (kernel copy of a send's destination, or NULL)
    pub msghdr_name: u32,
    /// `msghdr.msg_namelen`
    pub msghdr_namelen: u32,
    /// `io_connect.addr_len`
    pub connect_addr_len: u32,
    /// `inode.i_sb` (the kill layer identifies files by device and inode)
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `task_struct.comm` (16 bytes, read with two direct loads)
    pub task_comm: u32,
    /// `task_struct.cred` (the subjective credentials)
    pub task_cred: u32,
    /// `cred.uid` (a `kuid_t`: the uid as the initial user namespace sees it)
    pub cred_uid: u32,
    /// `cred.gid`
    pub cred_gid: u32,
}

impl KernelOffsets {
    /// All offsets missing; the state before userspace resolves them.
    pub const fn unresolved() -> Self {
        Self {
            task_pid: OFFSET_MISSING,
            task_tgid: OFFSET_MISSING,
            task_real_parent: OFFSET_MISSING,
            task_signal: OFFSET_MISSING,
            task_mm: OFFSET_MISSING,
            task_exit_code: OFFSET_MISSING,
            signal_live: OFFSET_MISSING,
            mm_arg_start: OFFSET_MISSING,
            mm_arg_end: OFFSET_MISSING,
            binprm_filename: OFFSET_MISSING,
            binprm_interp: OFFSET_MISSING,
            task_files: OFFSET_MISSING,
            task_fs: OFFSET_MISSING,
            files_fdt: OFFSET_MISSING,
            fdt_fd: OFFSET_MISSING,
            fdt_max_fds: OFFSET_MISSING,
            file_path: OFFSET_MISSING,
            file_inode: OFFSET_MISSING,
            file_private: OFFSET_MISSING,
            path_mnt: OFFSET_MISSING,
            path_dentry: OFFSET_MISSING,
            dentry_parent: OFFSET_MISSING,
            dentry_name: OFFSET_MISSING,
            qstr_name: OFFSET_MISSING,
            qstr_len: OFFSET_MISSING,
            dentry_inode: OFFSET_MISSING,
            vfsmount_root: OFFSET_MISSING,
            mount_mnt: OFFSET_MISSING,
            mount_parent: OFFSET_MISSING,
            mount_mountpoint: OFFSET_MISSING,
            inode_mode: OFFSET_MISSING,
            inode_nlink: OFFSET_MISSING,
            inode_ino: OFFSET_MISSING,
            fs_pwd: OFFSET_MISSING,
            binprm_file: OFFSET_MISSING,
            socket_type: OFFSET_MISSING,
            socket_sk: OFFSET_MISSING,
            skc_family: OFFSET_MISSING,
            skc_num: OFFSET_MISSING,
            skc_dport: OFFSET_MISSING,
            skc_rcv_saddr: OFFSET_MISSING,
            skc_daddr: OFFSET_MISSING,
            skc_v6_rcv_saddr: OFFSET_MISSING,
            skc_v6_daddr: OFFSET_MISSING,
            regs_di: OFFSET_MISSING,
            regs_si: OFFSET_MISSING,
            regs_dx: OFFSET_MISSING,
            regs_r10: OFFSET_MISSING,
            regs_r8: OFFSET_MISSING,
            regs_r9: OFFSET_MISSING,
            regs_orig_ax: OFFSET_MISSING,
            regs_bx: OFFSET_MISSING,
            regs_cx: OFFSET_MISSING,
            task_thread_info: OFFSET_MISSING,
            thread_info_status: OFFSET_MISSING,
            inode_private: OFFSET_MISSING,
            pid_numbers: OFFSET_MISSING,
            upid_nr: OFFSET_MISSING,
            regs_bp: OFFSET_MISSING,
            kiocb_opcode: OFFSET_MISSING,
            kiocb_cqe: OFFSET_MISSING,
            cqe_user_data: OFFSET_MISSING,
            cqe_fd: OFFSET_MISSING,
            kiocb_cmd: OFFSET_MISSING,
            kiocb_flags: OFFSET_MISSING,
            kiocb_async_data: OFFSET_MISSING,
            open_dfd: OFFSET_MISSING,
            open_filename: OFFSET_MISSING,
            open_how: OFFSET_MISSING,
            how_flags: OFFSET_MISSING,
            filename_name: OFFSET_MISSING,
            async_msg_addr: OFFSET_MISSING,
            async_msg_msg: OFFSET_MISSING,
            msghdr_name: OFFSET_MISSING,
            msghdr_namelen: OFFSET_MISSING,
            connect_addr_len: OFFSET_MISSING,
            inode_sb: OFFSET_MISSING,
            sb_dev: OFFSET_MISSING,
            task_comm: OFFSET_MISSING,
            task_cred: OFFSET_MISSING,
            cred_uid: OFFSET_MISSING,
            cred_gid: OFFSET_MISSING,
        }
    }
}

// Every member a u32 (82 fields), so the struct has no padding.
const _: () = {
    assert!(core::mem::size_of::<KernelOffsets>() == 82 * 4);
    assert!(core::mem::align_of::<KernelOffsets>() == 4);
    assert!(core::mem::offset_of!(KernelOffsets, regs_orig_ax) == 50 * 4);
};

#[cfg(feature = "user")]
// SAFETY: repr(C) struct of u32 without padding.
unsafe impl aya::Pod for KernelOffsets {}
