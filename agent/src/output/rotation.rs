//! Size rotation shared by the events file and the alert file sink:
//! `path` -> `path.1` -> ... -> `path.<keep>` (the oldest removed).
//!
//! Only a regular file is rotated, and only while `path` still names the very
//! file being written: a device (`/dev/null`), a FIFO, or a path replaced by
//! something else meanwhile is never renamed or removed. (Rotating
//! `--events-out /dev/null` by rename once moved the host's null device away
//! and left a regular file in its place.)

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Whether `path` names the regular file open as `file` (same device and
/// inode, not through a symbolic link).
pub fn names_regular(path: &Path, file: &File) -> bool {
    let (Ok(open), Ok(named)) = (file.metadata(), std::fs::symlink_metadata(path)) else {
        return false;
    };
    named.file_type().is_file() && (open.dev(), open.ino()) == (named.dev(), named.ino())
}

/// Rotates `path` if it still names `file` (see [`names_regular`]); returns
/// whether it did. The caller opens `path` again either way.
pub fn rotate(path: &Path, keep: u32, file: &File) -> io::Result<bool> {
    if !names_regular(path, file) {
        log::warn!(
            "{}: not the regular file being written (a device, a FIFO, or replaced): reopened, not rotated",
            path.display()
        );
        return Ok(false);
    }
    let numbered = |n: u32| {
        let mut p = path.as_os_str().to_owned();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    };
    if keep == 0 {
        std::fs::remove_file(path).or_else(ignore_missing)?;
        return Ok(true);
    }
    std::fs::remove_file(numbered(keep)).or_else(ignore_missing)?;
    for n in (1..keep).rev() {
        std::fs::rename(numbered(n), numbered(n + 1)).or_else(ignore_missing)?;
    }
    std::fs::rename(path, numbered(1))?;
    Ok(true)
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}
