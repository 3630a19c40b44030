//! tracefs and bpffs: mounted when absent (a fresh machine has neither), and
//! unmounted again at shutdown when the agent was the one to mount them.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const BPFFS: &str = "/sys/fs/bpf";

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot read /proc/mounts: {0}")]
    Mounts(#[source] std::io::Error),
    #[error(
        "cannot mount {fstype} on {target}: {source} (mounting needs CAP_SYS_ADMIN: mount it before the agent starts, or run the agent as root)"
    )]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Mount points of `fstype` in /proc/mounts.
pub fn mount_points(fstype: &str) -> Result<Vec<PathBuf>, MountError> {
    let text = std::fs::read_to_string("/proc/mounts").map_err(MountError::Mounts)?;
    Ok(parse_mounts(&text, fstype))
}

/// Mount points of `fstype` in a /proc/mounts text (octal escapes decoded).
pub fn parse_mounts(text: &str, fstype: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, dir, ty) = (f.next()?, f.next()?, f.next()?);
            (ty == fstype).then(|| PathBuf::from(unescape(dir)))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A filesystem this agent mounted, unmounted on drop.
#[derive(Debug)]
pub struct OwnedMount {
    target: PathBuf,
}

impl Drop for OwnedMount {
    fn drop(&mut self) {
        // Busy (someone else started using it) is fine: leave it.
        if let Err(e) = umount2(&self.target, MntFlags::empty()) {
            log::debug!("leaving {} mounted: {e}", self.target.display());
        } else {
            log::info!("unmounted {}", self.target.display());
        }
    }
}

/// Ensures a filesystem of `fstype` is mounted somewhere; mounts it at `target`
/// otherwise. Returns the mount point and, when the agent mounted it, the guard.
pub fn ensure(fstype: &'static str, target: &str) -> Result<(PathBuf, Option<OwnedMount>), MountError> {
    if let Some(p) = mount_points(fstype)?.into_iter().next() {
        return Ok((p, None));
    }
    let target = Path::new(target);
    let _ = std::fs::create_dir_all(target);
    mount(
        Some(fstype),
        target,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| MountError::Mount {
        fstype,
        target: target.to_owned(),
        source,
    })?;
    log::info!("mounted {fstype} on {}", target.display());
    Ok((
        target.to_owned(),
        Some(OwnedMount {
            target: target.to_owned(),
        }),
    ))
}

/// The cgroup v2 mount point (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified` on hybrid systems).
pub fn cgroup2() -> Result<Option<PathBuf>, MountError> {
    Ok(mount_points("cgroup2")?.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mount_table() {
        let t = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\nnone /mnt/with\\040space tracefs rw 0 0\n";
        assert_eq!(parse_mounts(t, "cgroup2"), [PathBuf::from("/sys/fs/cgroup/unified")]);
        assert_eq!(parse_mounts(t, "tracefs"), [PathBuf::from("/mnt/with space")]);
        assert!(parse_mounts(t, "bpf").is_empty());
    }
}
