//! File syscalls of watched processes (dispatched from `syscalls.rs` at exit).
//!
//! An open that succeeded is reported with the absolute path resolved in the
//! kernel from the opened `struct file` (dentries walked across mounts), so
//! relative paths, dirfds, `..`, symlinks and `/proc/self/cwd` all resolve to
//! the real file; the path as given comes second. A failed open, and the
//! path-based operations (rename, unlink, mkdir, link, symlink, chmod,
//! chown, truncate), carry the path as given plus, when it is relative, the
//! directory it is relative to (cwd or dirfd) resolved in the kernel.

use agent_common::{
    EventKind,
    event::{SYS_PATH_RELATIVE, SYS_PATH_RESOLVED, SYS_PATH_TRUNCATED, SYS_PATH2_TRUNCATED},
    syscalls::*,
};
use aya_ebpf::helpers::bpf_probe_read_user;

use crate::{
    kernel::{current_task, fd_file, file_mode, file_path, read},
    maps::{Stash, offset, offsets},
    probes::syscalls::record,
    record::Rec,
};

/// The directory a relative path of `dirfd` is relative to: `struct path *`.
#[inline(always)]
fn base_dir(dirfd: i64) -> Option<*const u8> {
    if dirfd == AT_FDCWD {
        let o = offsets();
        let fs: *const u8 = read(current_task(), &o.task_fs).ok()?;
        Some(unsafe { fs.add(offset(&o.fs_pwd) as usize) })
    } else {
        fd_file(dirfd as u64).map(file_path)
    }
}

/// Path 1 as given; when relative, its base directory as data.
#[inline(always)]
fn push_given(rec: &mut Rec, dirfd: i64, ptr: u64) {
    let n = rec.push_user_str(ptr, false, SYS_PATH_TRUNCATED);
    let first: u8 = unsafe { bpf_probe_read_user(ptr as *const u8) }.unwrap_or(b'/');
    if n > 0 && first != b'/' {
        rec.ev().flags |= SYS_PATH_RELATIVE;
        // Filled after path 2 below: data follows both paths.
        rec.ev().offset = dirfd as u64;
    }
}

#[inline(always)]
fn push_base(rec: &mut Rec) {
    if rec.ev().flags & SYS_PATH_RELATIVE != 0 {
        let dirfd = rec.ev().offset as i64;
        rec.ev().offset = 0;
        match base_dir(dirfd) {
            Some(p) => {
                rec.push_path_data(p);
            }
            None => rec.ev().flags &= !SYS_PATH_RELATIVE,
        }
    }
}

/// Path 1 resolved from the file behind `fd`, with its mode.
#[inline(always)]
fn push_fd(rec: &mut Rec, fd: u64) {
    if let Some(file) = fd_file(fd) {
        rec.ev().mode = file_mode(file);
        if rec.push_path(file_path(file), false, SYS_PATH_TRUNCATED) > 0 {
            rec.ev().flags |= SYS_PATH_RESOLVED;
        }
    }
}

/// How a syscall names its file(s): (dirfd, path) pairs or an fd.
enum Target {
    /// The path as given (relative to dirfd), and a second string.
    Given { dirfd: i64, path: u64, second: u64 },
    /// An fd: the path is resolved from its file.
    Fd(u64),
}

pub fn on_exit(st: &Stash, ret: i64) {
    let a = st.args;
    let cwd = AT_FDCWD;
    let target = match st.nr {
        // A successful open has a file to resolve; the path as given comes second.
        OPEN | CREAT if ret >= 0 => Target::Fd(ret as u64),
        OPENAT | OPENAT2 if ret >= 0 => Target::Fd(ret as u64),
        OPEN | CREAT => Target::Given {
            dirfd: cwd,
            path: a[0],
            second: 0,
        },
        OPENAT | OPENAT2 => Target::Given {
            dirfd: a[0] as i32 as i64,
            path: a[1],
            second: 0,
        },
        FTRUNCATE | FCHMOD | FCHOWN => Target::Fd(a[0]),
        TRUNCATE | MKDIR | RMDIR | UNLINK | CHMOD | CHOWN | LCHOWN => Target::Given {
            dirfd: cwd,
            path: a[0],
            second: 0,
        },
        MKDIRAT | UNLINKAT | FCHMODAT | FCHMODAT2 | FCHOWNAT => Target::Given {
            dirfd: a[0] as i32 as i64,
            path: a[1],
            second: 0,
        },
        RENAME | LINK => Target::Given {
            dirfd: cwd,
            path: a[0],
            second: a[1],
        },
        RENAMEAT | RENAMEAT2 | LINKAT => Target::Given {
            dirfd: a[0] as i32 as i64,
            path: a[1],
            second: a[3],
        },
        // The link created comes first; its target text second.
        SYMLINK => Target::Given {
            dirfd: cwd,
            path: a[1],
            second: a[0],
        },
        SYMLINKAT => Target::Given {
            dirfd: a[1] as i32 as i64,
            path: a[2],
            second: a[0],
        },
        _ => return,
    };
    let Some(mut rec) = record(EventKind::File, st, ret) else {
        return;
    };
    match target {
        Target::Fd(fd) => {
            push_fd(&mut rec, fd);
            if matches!(st.nr, OPEN | CREAT) {
                rec.push_user_str(a[0], true, SYS_PATH2_TRUNCATED);
            } else if matches!(st.nr, OPENAT | OPENAT2) {
                rec.push_user_str(a[1], true, SYS_PATH2_TRUNCATED);
            }
        }
        Target::Given { dirfd, path, second } => {
            push_given(&mut rec, dirfd, path);
            if second != 0 {
                rec.push_user_str(second, true, SYS_PATH2_TRUNCATED);
            }
            push_base(&mut rec);
        }
    }
    if st.nr == OPENAT2 {
        // struct open_how { u64 flags; ... }: keep the flags where openat has them.
        rec.ev().args[2] = unsafe { bpf_probe_read_user(a[2] as *const u64) }.unwrap_or(0);
    }
    rec.send();
}
