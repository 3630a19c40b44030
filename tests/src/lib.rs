//! Harness for the integration tests: starts the real `mcpwatch agent` (root:
//! it loads the kernel programs), runs real processes, reads the JSON lines it
//! writes.
//!
//! The agent binary comes from `MCPWATCH_BIN` (set by `cargo xtask test`), or
//! from the target directory next to the test executable.

mod agent;
pub mod fixtures;
pub mod mcp;
pub mod policy;
pub mod webhook;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub use agent::{AGENT_CAPS, Agent, agent_args, with_caps};

/// How long a test waits for something the agent should do promptly.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The `mcpwatch` binary under test.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MCPWATCH_BIN") {
        let p = PathBuf::from(p);
        // Relative to the workspace root, where `cargo xtask` runs.
        return if p.is_absolute() {
            p
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
        };
    }
    // target/<profile>/deps/<test> -> target/<profile>/mcpwatch
    let exe = std::env::current_exe().expect("test executable path");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("mcpwatch");
    assert!(
        p.exists(),
        "{} not built: run `cargo xtask test` (or build the mcpwatch package first)",
        p.display()
    );
    p
}

/// Panics unless root: these tests load BPF programs and would prove nothing otherwise.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "integration tests load BPF programs: run them as root"
    );
}

/// A fresh directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcpwatch-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// A loopback TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

/// A loopback UDP port nobody uses now.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("ephemeral port")
        .port()
}

/// A minimal HTTP/1.0 GET on loopback (1.0: no chunked answer to decode): (status code, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Write as _;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {resp:.200}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// A child process (a real daemon the test started) killed and reaped on drop.
pub struct Daemon {
    pub name: &'static str,
    pub child: Child,
    pub log_path: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &'static str, cmd: &mut Command, log_path: PathBuf) -> Daemon {
        let log = std::fs::File::create(&log_path).expect("daemon log");
        let err = log.try_clone().expect("daemon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Daemon { name, child, log_path }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Panics with the daemon's log if it exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited ({st}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child killed and reaped when the test ends, passed or not: a leaked
/// child would hold the integration lock's descriptor.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `f` returns Some, panicking with `what` and `context()` after `patience`.
pub fn wait_for<T>(
    what: &str,
    patience: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command to completion, capturing its output.
pub fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run command")
}

/// Reads a child's whole stdout.
pub fn read_stdout(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut s);
    }
    s
}

/// Events of one kind.
pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// Events of one process.
pub fn of_pid(events: &[Value], pid: u32) -> Vec<&Value> {
    events.iter().filter(|e| e["pid"] == pid).collect()
}

/// Exec events whose `exe` ends with `exe_suffix`.
pub fn exec_of<'a>(events: &'a [Value], exe_suffix: &str) -> Vec<&'a Value> {
    of_kind(events, "exec")
        .into_iter()
        .filter(|e| e["exe"].as_str().is_some_and(|x| x.ends_with(exe_suffix)))
        .collect()
}

/// The `pid` of an event line.
pub fn pid(e: &Value) -> u32 {
    e["pid"].as_u64().expect("pid") as u32
}

/// Events lines, one per line, for failure messages.
pub fn dump(events: &[Value]) -> String {
    events.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
}

/// Ids of the loaded BPF maps called `name` (the kernel keeps 15 bytes of a name).
pub fn loaded_map_ids(name: &str) -> Vec<u32> {
    aya::maps::loaded_maps()
        .flatten()
        .filter(|m| m.name_as_str() == Some(name))
        .map(|m| m.id())
        .collect()
}

/// Makes an executable shell script at `path`.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// Where `cargo xtask` installed the real MCP SDK and servers (`target/testenv`).
pub fn testenv() -> PathBuf {
    std::env::var_os("MCPWATCH_TESTENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/testenv"))
}

/// The Python interpreter of the test environment.
pub fn python() -> PathBuf {
    let venv = testenv().join("venv/bin/python");
    if venv.exists() { venv } else { PathBuf::from("python3") }
}

impl Agent {
    /// Runs a Python program wrapped as server `server`; returns its output.
    pub fn run_python(&self, server: &str, code: &str) -> Output {
        let py = python();
        let out = output(&mut self.wrap(server, &[py.to_str().unwrap(), "-c", code]));
        assert!(
            out.status.success(),
            "python failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        out
    }

    /// Waits for the exit of the root process of `server` and returns that server's events.
    pub fn server_events(&self, server: &str) -> Vec<Value> {
        let ev = self.wait_events(&format!("{server} to exit"), |ev| {
            let Some(root) = ev.iter().find(|e| e["kind"] == "watch" && e["server"] == server) else {
                return false;
            };
            ev.iter().any(|e| e["kind"] == "exit" && e["pid"] == root["pid"])
        });
        ev.into_iter().filter(|e| e["server"] == server).collect()
    }
}

/// The first event of `kind` satisfying `pred`, or a panic listing the events.
pub fn find<'a>(events: &'a [Value], kind: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    events
        .iter()
        .find(|e| e["kind"] == kind && pred(e))
        .unwrap_or_else(|| panic!("no {kind} event as expected among:\n{}", dump(events)))
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The manifests mcpwatch ships (`manifests/`).
pub fn shipped_manifests() -> PathBuf {
    repo().join("manifests")
}

/// Entry point of an npm reference server (`server-filesystem`...).
pub fn node_server(name: &str) -> PathBuf {
    testenv()
        .join("node/node_modules/@modelcontextprotocol")
        .join(name)
        .join("dist/index.js")
}

/// A scripted MCP session: the official Python SDK client (`tests/mcp/session.py`)
/// starts `server_cmd` over stdio, initializes, lists tools and makes `calls`.
pub struct McpSession {
    pub server_cmd: Vec<String>,
    pub calls: Vec<(String, Value)>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub allow_errors: bool,
    /// Directories the client offers as MCP roots.
    pub roots: Vec<PathBuf>,
}

impl McpSession {
    pub fn new(server_cmd: &[&str]) -> Self {
        Self {
            server_cmd: server_cmd.iter().map(|s| s.to_string()).collect(),
            calls: Vec::new(),
            env: Vec::new(),
            cwd: None,
            allow_errors: false,
            roots: Vec::new(),
        }
    }

    pub fn call(mut self, tool: &str, args: Value) -> Self {
        self.calls.push((tool.to_owned(), args));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn cwd(mut self, d: &Path) -> Self {
        self.cwd = Some(d.to_owned());
        self
    }

    /// Puts `mcpwatch exec --server NAME --require-agent` in front of the server.
    pub fn wrapped(mut self, agent: &Agent, server: &str) -> Self {
        let mut cmd: Vec<String> = vec![
            bin().to_string_lossy().into_owned(),
            "exec".into(),
            "--server".into(),
            server.into(),
            "--require-agent".into(),
            "--socket".into(),
            agent.socket.to_string_lossy().into_owned(),
            "--".into(),
        ];
        cmd.append(&mut self.server_cmd);
        self.server_cmd = cmd;
        self
    }

    /// Runs the session; returns the client's report (tools, call results).
    pub fn run(&self) -> Value {
        let mut c = Command::new(python());
        c.arg(repo().join("tests/mcp/session.py"));
        for (t, a) in &self.calls {
            c.arg("--call").arg(t).arg(a.to_string());
        }
        for (k, v) in &self.env {
            c.arg("--env").arg(format!("{k}={v}"));
        }
        if let Some(d) = &self.cwd {
            c.arg("--cwd").arg(d);
        }
        if self.allow_errors {
            c.arg("--allow-errors");
        }
        for r in &self.roots {
            c.arg("--root").arg(r);
        }
        c.env(
            "SESSION_SERVER_CMD",
            serde_json::to_string(&self.server_cmd).expect("json"),
        );
        let out = output(&mut c);
        assert!(
            out.status.success(),
            "MCP session {:?} failed ({}):\n{}\n{}",
            self.server_cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or("{}");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("session report {last:?}: {e}"))
    }
}

/// Alert lines, optionally of one server.
pub fn alerts<'a>(events: &'a [Value], server: Option<&str>) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "alert" && server.is_none_or(|s| e["server"] == s))
        .collect()
}

/// Alert lines of `server` raised by `rule`.
pub fn by_rule<'a>(events: &'a [Value], server: &str, rule: &str) -> Vec<&'a Value> {
    alerts(events, Some(server))
        .into_iter()
        .filter(|a| a["rule"] == rule)
        .collect()
}

/// Whether every process of `server` that was put under watch has exited.
pub fn server_done(events: &[Value], server: &str) -> bool {
    let roots: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "watch" && e["server"] == server)
        .map(|e| &e["pid"])
        .collect();
    !roots.is_empty()
        && roots
            .iter()
            .all(|p| events.iter().any(|e| e["kind"] == "exit" && e["pid"] == **p))
}
