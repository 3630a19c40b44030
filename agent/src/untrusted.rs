//! Reading files that other users can plant or grow: manifests, host
//! configurations of every user, tool pins. The agent reads them on its event
//! loop, so a read must never block and never be unbounded: a FIFO at
//! `~/.cursor/mcp.json` would otherwise stop the loop (no `status`, no SIGINT,
//! wrapped servers started unwatched), and a multi-megabyte file would stall it.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest host configuration read (Claude Desktop, VS Code, Cursor).
pub const HOST_CONFIG_MAX_BYTES: u64 = 1 << 20;
/// Largest manifest read.
pub const MANIFEST_MAX_BYTES: u64 = 4 << 20;
/// Largest pin file read.
pub const PIN_MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UntrustedError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a regular file ({kind}): refused", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{}: too large ({size} bytes, at most {cap} read)", path.display())]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    #[error("{}: not UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
}

impl UntrustedError {
    /// The file is absent (not an error for optional files).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads a regular file of at most `cap` bytes as text. Opened with
/// `O_NONBLOCK` so that a FIFO or a device cannot block the open itself, then
/// checked with `fstat` on the opened descriptor (no race with a rename), and
/// read through a `take` so that a file growing meanwhile is still bounded.
/// Symbolic links are followed: dotfile managers link host configurations.
pub fn read_text(path: &Path, cap: u64) -> Result<String, UntrustedError> {
    let io = |source| UntrustedError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a file"
        };
        return Err(UntrustedError::NotRegular {
            path: path.to_owned(),
            kind,
        });
    }
    if meta.len() > cap {
        return Err(UntrustedError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            cap,
        });
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > cap {
        return Err(UntrustedError::TooLarge {
            path: path.to_owned(),
            size: buf.len() as u64,
            cap,
        });
    }
    String::from_utf8(buf).map_err(|_| UntrustedError::NotUtf8 { path: path.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcpwatch-untrusted-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = dir("fifo");
        let p = d.join("mcp.json");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = read_text(&p, HOST_CONFIG_MAX_BYTES).unwrap_err();
        assert!(matches!(e, UntrustedError::NotRegular { kind: "a FIFO", .. }), "{e}");
        assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
    }

    #[test]
    fn a_device_and_a_directory_are_refused() {
        let e = read_text(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(
            matches!(
                e,
                UntrustedError::NotRegular {
                    kind: "a character device",
                    ..
                }
            ),
            "{e}"
        );
        let e = read_text(&std::env::temp_dir(), 10).unwrap_err();
        assert!(
            matches!(
                e,
                UntrustedError::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn a_file_over_the_cap_is_too_large() {
        let d = dir("big");
        let p = d.join("m.json");
        std::fs::write(&p, vec![b' '; 11]).unwrap();
        let e = read_text(&p, 10).unwrap_err();
        assert!(matches!(e, UntrustedError::TooLarge { size: 11, cap: 10, .. }), "{e}");
        std::fs::write(&p, "0123456789").unwrap();
        assert_eq!(read_text(&p, 10).unwrap(), "0123456789");
    }

    #[test]
    fn a_missing_file_is_not_found() {
        let e = read_text(Path::new("/nonexistent/mcp.json"), 10).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }
}
