//! The host the suite runs on stays intact: `/dev/null` must be the null
//! character device before the suite starts and still be one after it.
//!
//! An agent that once rotated `--events-out /dev/null` by rename left a
//! regular file there; every later build then read stale compiler output from
//! "/dev/null" and failed far from the cause. A damaged `/dev/null` found at
//! start is restored (it is what a fresh machine has); one damaged by the suite
//! fails it.
use std::{ffi::CString, os::unix::fs::FileTypeExt as _, path::Path};

use anyhow::{Context as _, bail};

const NULL: &str = "/dev/null";

fn null_is_intact() -> bool {
    std::fs::symlink_metadata(NULL).is_ok_and(|m| m.file_type().is_char_device())
}

/// Restores `/dev/null` (character device 1:3, mode 0666) if it is not one.
pub fn ensure_null() -> anyhow::Result<()> {
    if null_is_intact() {
        return Ok(());
    }
    eprintln!("xtask: {NULL} is not the null device (damaged by an earlier run); restoring it");
    match std::fs::remove_file(NULL) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing the damaged {NULL}")),
    }
    let path = CString::new(NULL)?;
    // SAFETY: a valid NUL-terminated path; mknod has no other preconditions.
    let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("mknod /dev/null (needs root)");
    }
    // mknod's mode is filtered by the umask.
    std::fs::set_permissions(Path::new(NULL), std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    Ok(())
}

/// Fails when something the suite ran replaced `/dev/null`.
pub fn check_null_after(what: &str) -> anyhow::Result<()> {
    if !null_is_intact() {
        bail!("{NULL} is no longer the null device after {what}: something the suite ran replaced it");
    }
    Ok(())
}

/// The bpffs directory the integration tests pin each agent's kernel objects
/// under (`tests/src/lib.rs`: `/sys/fs/bpf/mcpwatch-it-<test>-<pid>`).
const BPFFS: &str = "/sys/fs/bpf";
const TEST_PIN_PREFIX: &str = "mcpwatch-it-";

/// Removes the pins a killed earlier run left (its agent never reached its
/// clean stop): pinned links keep their programs attached, so every later
/// syscall of the machine would pay for them and the suite's timings drift.
/// Only the tests' own prefix is touched; bpffs not mounted means nothing left.
pub fn remove_stale_test_pins() -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(BPFFS) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing {BPFFS}")),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {BPFFS}"))?;
        if !entry.file_name().to_string_lossy().starts_with(TEST_PIN_PREFIX) {
            continue;
        }
        let path = entry.path();
        eprintln!("xtask: removing {} (pins left by a killed earlier run)", path.display());
        std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}
