//! Reading files other users may control (host configurations in every
//! home, manifests in a shared directory): only regular files, opened
//! non-blocking (a FIFO planted in their place must not hold the agent's
//! loop), and never more than a cap (a huge file must not stall it).

use std::{
    fs::File,
    io::{self, Read as _},
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

/// Largest host configuration read.
pub const HOST_CONFIG_MAX: u64 = 1 << 20;
/// Largest manifest read.
pub const MANIFEST_MAX: u64 = 4 << 20;

/// The text of `path`, when it is a regular file of at most `max` bytes.
pub fn read_capped(path: &Path, max: u64) -> io::Result<String> {
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer.
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else {
            "a directory"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({what}): refused"),
        ));
    }
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("too large: {} bytes (at most {max})", meta.len()),
        ));
    }
    let mut text = String::new();
    // The file may grow after the fstat: never read past the cap.
    f.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("too large: more than {max} bytes"),
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_the_cap_are_read() {
        let d = std::env::temp_dir().join(format!("mcpwatch-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let ok = d.join("ok.json");
        std::fs::write(&ok, "{}").unwrap();
        assert_eq!(read_capped(&ok, 10).unwrap(), "{}");
        let big = d.join("big.json");
        std::fs::write(&big, vec![b' '; 11]).unwrap();
        let e = read_capped(&big, 10).unwrap_err().to_string();
        assert!(e.contains("too large"), "{e}");
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = d.join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = read_capped(&fifo, 10).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        assert!(read_capped(&d, 10).is_err(), "a directory");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
