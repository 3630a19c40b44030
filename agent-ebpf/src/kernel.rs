//! Reads of kernel structures through BTF-resolved offsets.

use agent_common::{
    EventHeader,
    abi::{S_IFCHR, S_IFIFO, S_IFMT, S_IFREG, S_IFSOCK},
    event::{FD_CHAR, FD_FILE, FD_NONE, FD_OTHER, FD_PIPE, FD_SOCKET, PATH_MAX},
    offsets::OFFSET_MISSING,
};
use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_boot_ns, bpf_probe_read_kernel,
    bpf_probe_read_kernel_buf,
};

use crate::maps::{PATH_SCRATCH, offset, offsets};

/// Reads a `T` at `base + off`; fails on a missing offset or a bad pointer.
#[inline(always)]
pub fn read<T: Copy>(base: *const u8, off: &u32) -> Result<T, i64> {
    read_at(base, offset(off))
}

/// Reads a `T` at `base + off` for an offset already loaded (or summed).
#[inline(always)]
pub fn read_at<T: Copy>(base: *const u8, off: u32) -> Result<T, i64> {
    if off == OFFSET_MISSING || base.is_null() {
        return Err(-1);
    }
    // SAFETY: the helper checks the kernel address; a bad one is an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T).map_err(|e| e as i64) }
}

#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: a helper without arguments; the pointer is only read through
    // bpf_probe_read_kernel.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// Fills the common header for the current task.
#[inline(always)]
pub fn fill_header(h: &mut EventHeader, kind: u32, server: u32, flags: u32) {
    h.kind = kind;
    h.server = server;
    // SAFETY: a helper without arguments.
    h.ktime_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.flags = flags;
    let o = offsets();
    // Direct loads through the trusted task pointer (see
    // [`in_compat_syscall`]): `pid` and `tgid` (what
    // `bpf_get_current_pid_tgid` returns); `real_parent->tgid`; `cred->uid` and
    // `cred->gid` (what `bpf_get_current_uid_gid` returns: the ids as the
    // initial user namespace sees them, without its two calls); `comm` as
    // two 8-byte words (`bpf_get_current_comm` is a helper call and a
    // byte-wise copy of the same 16 bytes; a comm being renamed is read old
    // or new either way). Measured with bpf_stats: the three helpers cost
    // about 95 ns per record (comm 50, uid/gid 33, pid/tgid 14), the loads
    // nothing measurable.
    // SAFETY: the current task, valid for the program's run; the verifier
    // checks every load against the kernel's BTF and makes it
    // fault-tolerant (a fault reads 0). The header's `comm` is COMM_LEN
    // (16) bytes.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        h.pid = core::ptr::read_volatile(task.add(offset(&o.task_pid) as usize) as *const u32);
        h.tgid = core::ptr::read_volatile(task.add(offset(&o.task_tgid) as usize) as *const u32);
        let parent = core::ptr::read_volatile(task.add(offset(&o.task_real_parent) as usize) as *const *const u8);
        h.ppid = core::ptr::read_volatile(parent.add(offset(&o.task_tgid) as usize) as *const u32);
        let cred = core::ptr::read_volatile(task.add(offset(&o.task_cred) as usize) as *const *const u8);
        h.uid = core::ptr::read_volatile(cred.add(offset(&o.cred_uid) as usize) as *const u32);
        h.gid = core::ptr::read_volatile(cred.add(offset(&o.cred_gid) as usize) as *const u32);
        let comm = task.add(offset(&o.task_comm) as usize) as *const u64;
        let out = h.comm.as_mut_ptr() as *mut u64;
        core::ptr::write_unaligned(out, core::ptr::read_volatile(comm));
        core::ptr::write_unaligned(out.add(1), core::ptr::read_volatile(comm.add(1)));
    }
}

/// The `struct file *` behind fd `fd` of the current task.
#[inline(always)]
pub fn fd_file(fd: u64) -> Option<*const u8> {
    // An fd is a C int: only the low 32 bits of the register are meaningful.
    let fd = fd as u32 as u64;
    let o = offsets();
    // Direct loads down to the table (see [`in_compat_syscall`]); the
    // descriptor array holds plain pointers the verifier does not type, read
    // with the helper.
    // SAFETY: the current task, valid for the program's run; the verifier
    // checks each load against the kernel's BTF and makes it fault-tolerant
    // (a fault, or a task without files, reads 0: no descriptor).
    let (max, array) = unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let files = core::ptr::read_volatile(task.add(offset(&o.task_files) as usize) as *const *const u8);
        let fdt = core::ptr::read_volatile(files.add(offset(&o.files_fdt) as usize) as *const *const u8);
        let max = core::ptr::read_volatile(fdt.add(offset(&o.fdt_max_fds) as usize) as *const u32);
        let array = core::ptr::read_volatile(fdt.add(offset(&o.fdt_fd) as usize) as *const *const u8);
        (max, array)
    };
    if fd >= max as u64 {
        return None;
    }
    let file: *const u8 = read_at(array, (fd as u32) * 8).ok()?;
    (!file.is_null()).then_some(file)
}

/// The pid (in the initial namespace) of the process a pidfd refers to:
/// `file->f_inode->i_private` is the pidfs inode's `struct pid *`, whose
/// `numbers[0].nr` is the pid at level 0.
#[inline(always)]
pub fn pidfd_pid(file: *const u8) -> Option<u32> {
    let o = offsets();
    let inode: *const u8 = read(file, &o.file_inode).ok()?;
    let pid: *const u8 = read(inode, &o.inode_private).ok()?;
    let off = offset(&o.pid_numbers).checked_add(offset(&o.upid_nr))?;
    read_at::<u32>(pid, off).ok()
}

/// `TS_COMPAT` (x86 `thread_info.status`): the syscall being made is an
/// ia32 one (`int 0x80`), numbered from the ia32 table.
const TS_COMPAT: u32 = 0x0002;

/// Whether the current task is in an ia32 syscall. Without the offsets
/// (the feature is off, the agent warned at start-up) it answers no.
///
/// A direct load through the trusted `task_struct` pointer of
/// `bpf_get_current_task_btf`, no helper call: the offsets come from the
/// read-only, frozen `OFFSETS`, so the verifier knows them as constants,
/// checks the load against the kernel's BTF and drops the missing-offset
/// branch it can never take.
#[inline(always)]
pub fn in_compat_syscall() -> bool {
    let o = offsets();
    let ti = offset(&o.task_thread_info);
    let st = offset(&o.thread_info_status);
    if ti == OFFSET_MISSING || st == OFFSET_MISSING {
        return false;
    }
    // SAFETY: the current task, valid for the program's run; the verifier
    // turns the load into a fault-tolerant one and checks its offset.
    let status = unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        core::ptr::read_volatile(task.add(ti.wrapping_add(st) as usize) as *const u32)
    };
    status & TS_COMPAT != 0
}

/// A register saved in a tracepoint's `struct pt_regs *` (a BTF pointer):
/// a direct load, no helper call, its offset a verifier constant (see
/// [`in_compat_syscall`]).
#[inline(always)]
pub fn saved_reg(regs: *const u8, field: &u32) -> u64 {
    // SAFETY: `regs` is the tracepoint's BTF-typed argument; the verifier
    // checks the offset against `struct pt_regs` and makes the load
    // fault-tolerant.
    unsafe { core::ptr::read_volatile(regs.add(offset(field) as usize) as *const u64) }
}

/// `file->f_inode->i_mode`.
#[inline(always)]
pub fn file_mode(file: *const u8) -> u32 {
    let o = offsets();
    read::<*const u8>(file, &o.file_inode)
        .and_then(|inode| read::<u16>(inode, &o.inode_mode))
        .map(|m| m as u32)
        .unwrap_or(0)
}

/// `file->f_inode->i_ino`.
#[inline(always)]
pub fn file_ino(file: *const u8) -> Option<u64> {
    let o = offsets();
    read::<*const u8>(file, &o.file_inode)
        .and_then(|inode| read::<u64>(inode, &o.inode_ino))
        .ok()
}

/// `file->f_inode`'s identity: `(i_ino, i_sb->s_dev)`; `None` where the
/// kernel lacks the fields (BTF) or the read fails.
#[inline(always)]
pub fn file_identity(file: *const u8) -> Option<(u64, u32)> {
    let o = offsets();
    let inode: *const u8 = read(file, &o.file_inode).ok()?;
    let ino: u64 = read(inode, &o.inode_ino).ok()?;
    let sb: *const u8 = read(inode, &o.inode_sb).ok()?;
    let dev: u32 = read(sb, &o.sb_dev).ok()?;
    Some((ino, dev))
}

/// What an inode mode is, as an `FD_*` value.
#[inline(always)]
pub fn fd_kind(mode: u32) -> u8 {
    match mode & S_IFMT {
        0 => FD_NONE,
        S_IFSOCK => FD_SOCKET,
        S_IFIFO => FD_PIPE,
        S_IFCHR => FD_CHAR,
        S_IFREG => FD_FILE,
        _ => FD_OTHER,
    }
}

/// `&file->f_path`.
#[inline(always)]
pub fn file_path(file: *const u8) -> *const u8 {
    file.wrapping_add(offset(&offsets().file_path) as usize)
}

/// Deepest path walked (components plus mount crossings).
const MAX_DEPTH: usize = 64;
/// The scratch buffer is written backwards from `END`. Every position is kept
/// masked with `MASK`, so all paths through the loop reach its head with the
/// same abstract position range and the verifier can prune them: without
/// that, each iteration multiplies the states and a walk costs the whole
/// instruction budget.
const MASK: usize = 2 * PATH_MAX - 1;
const END: usize = MASK;

/// Writes the absolute path of `path` (a `struct path *`: mount + dentry) in
/// `dst`, crossing mount points up to the global root like `d_path()`.
/// Returns the length and whether the path was cut (longer than `PATH_MAX - 1`
/// or deeper than `MAX_DEPTH`).
#[inline(always)]
pub fn resolve_path(path: *const u8, dst: &mut [u8]) -> Option<(usize, bool)> {
    let r = walk_path(path, dst.as_mut_ptr(), dst.len());
    (r != 0).then_some(((r & 0xffff) as usize, r >> 32 != 0))
}

/// The walk, as a BPF subprogram: the verifier then sees one return value per
/// exit instead of carrying each early exit's state through the caller.
/// Returns `len | truncated << 32`, 0 on failure.
#[inline(never)]
fn walk_path(path: *const u8, dst: *mut u8, dst_len: usize) -> u64 {
    // SAFETY: rebuilt from the slice `resolve_path` was given.
    let dst = unsafe { core::slice::from_raw_parts_mut(dst, dst_len) };
    match walk_path_inner(path, dst) {
        Some((len, cut)) => len as u64 | ((cut as u64) << 32),
        None => 0,
    }
}

#[inline(always)]
fn walk_path_inner(path: *const u8, dst: &mut [u8]) -> Option<(usize, bool)> {
    let o = offsets();
    let name_ptr_off = offset(&o.dentry_name).wrapping_add(offset(&o.qstr_name));
    let name_len_off = offset(&o.dentry_name).wrapping_add(offset(&o.qstr_len));
    let parent_off = offset(&o.dentry_parent);
    // `d_parent` then `d_name` (hash, len, name pointer) are neighbours in
    // `struct dentry` on the kernels we know: one read of the three words per
    // component instead of three reads. Known to the verifier as a constant.
    let packed = name_len_off == parent_off.wrapping_add(12) && name_ptr_off == parent_off.wrapping_add(16);
    let mount_mnt = offset(&o.mount_mnt) as usize;
    let vfsmnt: *const u8 = read(path, &o.path_mnt).ok()?;
    // Only fresh values cross iterations (mnt, its root, dentry from reads;
    // pos only known as masked), so the two ways through an iteration reach
    // the next one in equivalent states and the verifier prunes instead of
    // doubling.
    let mut dentry: *const u8 = read(path, &o.path_dentry).ok()?;
    let mut mnt: *const u8 = (vfsmnt as usize).wrapping_sub(mount_mnt) as *const u8;
    // Read once per mount, not per component.
    let mut mnt_root: *const u8 = read(vfsmnt, &o.vfsmount_root).ok()?;
    // SAFETY: this CPU's scratch value, valid for the run and used by
    // nothing else meanwhile.
    let scratch = unsafe { &mut *PATH_SCRATCH.get_ptr_mut(0)? };
    scratch.pos = END as u64;
    // SAFETY: a read through a valid reference.
    let mut pos = (unsafe { core::ptr::read_volatile(&scratch.pos) } as usize) & MASK;
    let mut truncated = true;
    for _ in 0..MAX_DEPTH {
        if dentry == mnt_root {
            let mnt_parent: *const u8 = read(mnt, &o.mount_parent).ok()?;
            if mnt_parent == mnt {
                truncated = false;
                break;
            }
            dentry = read(mnt, &o.mount_mountpoint).ok()?;
            mnt = mnt_parent;
            // SAFETY: pointer arithmetic only; every read through it is a
            // checked bpf_probe_read_kernel.
            mnt_root = read(unsafe { mnt.add(mount_mnt) }, &o.vfsmount_root).ok()?;
            continue;
        }
        let (parent, len, name) = if packed {
            let w: [u64; 3] = read_at(dentry, parent_off).ok()?;
            (w[0] as *const u8, (w[1] >> 32) as u32, w[2] as *const u8)
        } else {
            let parent: *const u8 = read_at(dentry, parent_off).ok()?;
            let len: u32 = read_at(dentry, name_len_off).ok()?;
            let name: *const u8 = read_at(dentry, name_ptr_off).ok()?;
            (parent, len, name)
        };
        // A self-parented dentry that is not its mount's root is a pseudo
        // file (memfd, anonymous inode) or detached: its own name ends the path.
        let pseudo = dentry == parent;
        let n = (len & 0xff) as usize;
        if pos < PATH_MAX + n + 1 {
            break;
        }
        let start = (pos - n - 1) & MASK;
        scratch.buf[start] = b'/';
        let from = start + 1;
        // SAFETY: the helper checks the kernel pointer; `from + n` stays in
        // `buf` (n < 256, from <= MASK).
        if unsafe { bpf_probe_read_kernel_buf(name, &mut scratch.buf[from..from + n]) }.is_err() {
            return None;
        }
        // Through map memory: the verifier tracks no map contents, so pos
        // reaches the next iteration as "some value in [0, MASK]" on every
        // path instead of a range narrowed differently by each history.
        scratch.pos = start as u64;
        // SAFETY: a read through a valid reference.
        pos = (unsafe { core::ptr::read_volatile(&scratch.pos) } as usize) & MASK;
        if pseudo {
            truncated = false;
            break;
        }
        dentry = parent;
    }
    let buf = &mut scratch.buf;
    if pos == END {
        pos = END - 1;
        buf[pos] = b'/';
    }
    let len = (END - pos) & MASK;
    if len >= PATH_MAX || len > dst.len() {
        return None;
    }
    // SAFETY: `pos & MASK` lies inside `buf`.
    let src = unsafe { buf.as_ptr().add(pos & MASK) };
    // SAFETY: the helper checks the source; `len <= dst.len()` was checked.
    unsafe { bpf_probe_read_kernel_buf(src, &mut dst[..len]) }.ok()?;
    Some((len, truncated))
}
