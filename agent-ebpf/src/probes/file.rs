//! File syscalls of watched processes (dispatched from `syscalls.rs` at exit),
//! argument positions from the shared syscall table.
//!
//! An open that succeeded is reported with the absolute path resolved in the
//! kernel from the opened `struct file` (dentries walked across mounts), so
//! relative paths, dirfds, `..`, symlinks and `/proc/self/cwd` all resolve to
//! the real file; the path as given comes second. A failed open, a refused
//! exec, and the path-based operations (rename, unlink, mkdir, link,
//! symlink, chmod, chown, truncate), have no kernel object to read: they carry the path as
//! given, read from the caller's memory at exit (flagged
//! `SYS_USER_MEMORY`), plus, when it is relative, the directory it is
//! relative to (cwd or dirfd) resolved in the kernel.

use agent_common::{
    EventKind,
    abi::AT_FDCWD,
    event::{SYS_PATH_RELATIVE, SYS_PATH_RESOLVED, SYS_PATH_TRUNCATED, SYS_PATH2_TRUNCATED},
    kill::KILL_CREDENTIAL,
    probe_errors::Reason,
    syscalls::{Family, Op, arg, lookup},
};
use aya_ebpf::helpers::bpf_probe_read_user;

use crate::{
    kernel::{current_task, fd_file, file_identity, file_mode, file_path, read},
    maps::{offset, offsets},
    probes::{kill, syscalls::record},
    record::{Call, Rec},
};

const EACCES: i64 = 13;
const EPERM: i64 = 1;

/// The directory a relative path of `dirfd` is relative to: `struct path *`.
#[inline(always)]
pub fn base_dir(dirfd: i64) -> Option<*const u8> {
    if dirfd == AT_FDCWD {
        let o = offsets();
        let fs: *const u8 = read(current_task(), &o.task_fs).ok()?;
        // SAFETY: pointer arithmetic only; the result is read through
        // bpf_probe_read_kernel, which checks it.
        Some(unsafe { fs.add(offset(&o.fs_pwd) as usize) })
    } else {
        fd_file(dirfd as u64).map(file_path)
    }
}

/// Path 1 resolved from the file behind `fd`, with its mode.
#[inline(always)]
pub fn push_fd(rec: &mut Rec, fd: u64) {
    let Some(file) = fd_file(fd) else {
        rec.error(Reason::KernelRead);
        return;
    };
    rec.ev().mode = file_mode(file);
    if let Some((ino, dev)) = file_identity(file) {
        rec.ev().file_ino = ino;
        rec.ev().file_dev = dev;
    }
    if rec.push_path(file_path(file), false, SYS_PATH_TRUNCATED) > 0 {
        rec.ev().flags |= SYS_PATH_RESOLVED;
    }
}

/// The kill layer: an enforced server that opened one of its credential
/// locations dies before the open returns (decided on the file's resolved
/// path, path 1 of the record, or on the file's identity: the same
/// credential through a hardlink, a bind mount or a renamed directory).
#[inline(always)]
fn kill_credential(rec: &mut Rec, server: u32) {
    if rec.ev().flags & SYS_PATH_RESOLVED == 0 || !kill::enforced(server) {
        return;
    }
    let (path, len) = rec.path1();
    let (ino, dev) = (rec.ev().file_ino, rec.ev().file_dev);
    if kill::path_class(server, path, len) == KILL_CREDENTIAL || kill::credential_inode(server, ino, dev) {
        rec.ev().header.flags |= kill::kill_current();
    }
}

pub fn on_exit(st: &Call, ret: i64) {
    let Some(sc) = lookup(st.nr) else {
        return;
    };
    if sc.family != Family::File {
        return;
    }
    // A successful exec returns in the new image (its path is no longer in
    // memory; the exec tracepoint reported it), and a PATH search fails with
    // ENOENT in every directory before the one with the program: only a
    // refusal, a sandbox's answer, is reported.
    if sc.op == Op::Exec && ret != -EACCES && ret != -EPERM {
        return;
    }
    let a = &st.args;
    let Some(mut rec) = record(EventKind::File, st, ret) else {
        return;
    };
    if sc.ret_fd && ret >= 0 {
        // A successful open has a file to resolve; the path as given comes second.
        push_fd(&mut rec, ret as u64);
        kill_credential(&mut rec, st.server);
        rec.push_user_str(arg(a, sc.path), true, SYS_PATH2_TRUNCATED);
    } else if sc.path.is_none() {
        // ftruncate, fchmod, fchown: the file behind the descriptor.
        push_fd(&mut rec, arg(a, sc.fd));
    } else {
        let dirfd = match sc.dirfd {
            Some(i) => arg(a, Some(i)) as i32 as i64,
            None => AT_FDCWD,
        };
        let n = rec.push_user_str(arg(a, sc.path), false, SYS_PATH_TRUNCATED);
        let relative = n > 0 && rec.path1_first() != b'/';
        rec.push_user_str(arg(a, sc.path2), true, SYS_PATH2_TRUNCATED);
        // Data follows both paths: the base directory goes last.
        if relative {
            match base_dir(dirfd) {
                Some(p) => {
                    rec.ev().flags |= SYS_PATH_RELATIVE;
                    rec.push_path_data(p);
                }
                None => rec.error(Reason::KernelRead),
            }
        }
    }
    if sc.open_how.is_some() {
        // struct open_how { u64 flags; ... }: keep the flags where openat has them.
        let how = arg(a, sc.open_how) as *const u64;
        // SAFETY: the helper checks the user pointer.
        rec.ev().args[2] = unsafe { bpf_probe_read_user(how) }.unwrap_or(0);
    }
    rec.send();
}
