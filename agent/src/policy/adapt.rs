//! Kernel events (decode.rs) to policy activities. Facts the kernel does not
//! report yet are completed from /proc while the process is still there.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use super::{
    activity::{Activity, ExecActivity, StdioKind},
    engine::is_shell,
    manifest::basename,
};
use crate::decode::{Event, Exec};

/// How recent a modification makes an exec'd file "just written".
const RECENT: Duration = Duration::from_secs(120);

/// Where runtimes install packages they run at once.
const PACKAGE_TREES: &[&str] = &[
    "/node_modules/",
    "/site-packages/",
    "/.npm/",
    "/.cache/uv/",
    "/.local/share/uv/",
];

/// The activity a kernel event stands for; None for pure lifecycle events
/// (fork, exit), which only the process table needs.
pub fn activity(event: &Event) -> Option<Activity> {
    match event {
        Event::Exec(e) => Some(Activity::Exec(exec(e))),
        Event::Fork(_) | Event::Exit(_) => None,
    }
}

pub fn exec(e: &Exec) -> ExecActivity {
    let pid = e.header.pid;
    let exe_link = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fileless = is_fd_path(&e.filename) || exe_link.contains("/memfd:") || exe_link.ends_with(" (deleted)");
    let program = e.interp.as_deref().unwrap_or(&e.filename);
    let cwd = cwd(pid).map(PathBuf::from);
    let mut candidates = vec![e.filename.clone()];
    if is_shell(program) || is_script_runner(program) {
        candidates.extend(script_arg(&e.argv).map(str::to_owned));
    }
    // Package managers write what they then run (npx's cache, uv's venvs).
    let recently_modified = candidates
        .iter()
        .filter(|c| !PACKAGE_TREES.iter().any(|t| c.contains(t)))
        .any(|c| modified_recently(c, cwd.as_deref()));
    ExecActivity {
        filename: e.filename.clone(),
        interp: e.interp.clone(),
        argv: e.argv.clone(),
        fileless,
        written_by_server: false,
        recently_modified,
        stdio: [0, 1, 2].map(|fd| stdio(pid, fd)),
    }
}

/// The process's working directory.
pub fn cwd(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The script an interpreter runs: its first argument that is not an option
/// (later arguments are the script's data, not code).
pub fn script_arg(argv: &[String]) -> Option<&str> {
    argv.iter().skip(1).find(|a| !a.starts_with('-')).map(String::as_str)
}

fn is_fd_path(p: &str) -> bool {
    p.starts_with("/dev/fd/")
        || p.starts_with("/proc/self/fd/")
        || (p.starts_with("/proc/") && p.split('/').nth(3) == Some("fd"))
}

fn is_script_runner(program: &str) -> bool {
    super::glob::name_matches(
        "{python,python3,python3.*,perl,ruby,node,nodejs,php}",
        basename(program),
    )
}

fn modified_recently(path: &str, cwd: Option<&Path>) -> bool {
    let p = match cwd {
        Some(c) if !path.starts_with('/') => c.join(path),
        _ => PathBuf::from(path),
    };
    std::fs::metadata(&p).is_ok_and(|m| {
        m.is_file()
            && m.modified()
                .is_ok_and(|t| SystemTime::now().duration_since(t).is_ok_and(|age| age < RECENT))
    })
}

fn stdio(pid: u32, fd: u32) -> Option<StdioKind> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_string_lossy();
    Some(
        if let Some(inode) = s.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            if is_inet_socket(pid, inode) {
                StdioKind::Socket
            } else {
                StdioKind::LocalSocket
            }
        } else if s.starts_with("pipe:") {
            StdioKind::Pipe
        } else if s.starts_with("/dev/pts/") || s.starts_with("/dev/tty") {
            StdioKind::Tty
        } else if s.starts_with('/') {
            StdioKind::File(s.into_owned())
        } else {
            StdioKind::Other
        },
    )
}

/// Whether a socket is a TCP or UDP one. Unix socketpairs are ordinary stdio:
/// libuv (so every Node-based MCP host) gives children socketpairs, not pipes.
fn is_inet_socket(pid: u32, inode: &str) -> bool {
    ["tcp", "tcp6", "udp", "udp6"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .is_ok_and(|text| text.lines().skip(1).any(|l| l.split_whitespace().nth(9) == Some(inode)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_paths_are_fileless() {
        assert!(is_fd_path("/dev/fd/3"));
        assert!(is_fd_path("/proc/self/fd/7"));
        assert!(is_fd_path("/proc/123/fd/7"));
        assert!(!is_fd_path("/proc/123/exe"));
        assert!(!is_fd_path("/usr/bin/fd"));
    }

    #[test]
    fn tcp_sockets_are_told_from_socketpairs() {
        use std::os::{fd::AsRawFd, unix::net::UnixStream};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let me = std::process::id();
        assert_eq!(stdio(me, c.as_raw_fd() as u32), Some(StdioKind::Socket));
        assert_eq!(stdio(me, a.as_raw_fd() as u32), Some(StdioKind::LocalSocket));
    }

    #[test]
    fn this_process_stdio_and_recent_files() {
        assert!(stdio(std::process::id(), 0).is_some());
        let f = std::env::temp_dir().join(format!("mcpwatch-adapt-{}", std::process::id()));
        std::fs::write(&f, "x").unwrap();
        assert!(modified_recently(f.to_str().unwrap(), None));
        assert!(!modified_recently("/etc/hostname-does-not-exist", None));
        std::fs::remove_file(&f).unwrap();
    }
}
