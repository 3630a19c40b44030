//! Harness for the integration tests: starts the real `mcpwatch agent` (root:
//! it loads the kernel programs), runs real processes, reads the JSON lines it
//! writes.
//!
//! The agent binary comes from `MCPWATCH_BIN` (set by `cargo xtask test`), or
//! from the target directory next to the test executable.

pub mod fixtures;
pub mod mcp;
pub mod policy;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

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

/// The capabilities the agent runs with in the shipped systemd unit (setpriv's
/// names), for the least-privilege runs (`MCPWATCH_LEAST_PRIVILEGE=1`).
pub const AGENT_CAPS: &str = "bpf,perfmon,sys_ptrace,net_admin,dac_read_search";

/// MCPWATCH_LEAST_PRIVILEGE=1: every agent the harness starts holds only [`AGENT_CAPS`].
fn least_privilege_from_env() -> bool {
    std::env::var("MCPWATCH_LEAST_PRIVILEGE").is_ok_and(|v| v == "1")
}

/// `mcpwatch` run as root with no capability but `caps` (setpriv's names).
pub fn with_caps(caps: &str) -> Command {
    let bounding: Vec<String> = caps.split(',').map(|c| format!("+{}", c.trim())).collect();
    let mut c = Command::new("setpriv");
    c.arg(format!("--bounding-set=-all,{}", bounding.join(","))).arg(bin());
    c
}

/// A running agent with its own control socket and event file.
pub struct Agent {
    child: Option<Child>,
    pub dir: PathBuf,
    /// The bpffs directory its kernel objects are pinned in (the test's own).
    pub pin_dir: PathBuf,
    /// Removed when the agent is dropped (a killed agent leaves its programs
    /// attached while they are pinned), unless [`Agent::kill9`] handed it on.
    remove_pins: bool,
    pub socket: PathBuf,
    pub events_path: PathBuf,
    pub log_path: PathBuf,
}

impl Agent {
    /// Starts an agent with extra arguments and waits until it answers.
    /// Unless the arguments say otherwise, it serves metrics on an ephemeral
    /// loopback port (agents of concurrent tests must not share one).
    pub fn start(name: &str, args: &[&str]) -> Agent {
        Self::start_in(name, scratch_dir(name), args)
    }

    /// Starts an agent with `config` as its configuration file (written in
    /// its scratch directory; `{dir}` in it stands for that directory).
    pub fn start_with_config(name: &str, config: &str, args: &[&str]) -> Agent {
        let dir = scratch_dir(name);
        let path = dir.join("config.toml");
        std::fs::write(&path, config.replace("{dir}", &dir.to_string_lossy())).expect("write config");
        let path = path.to_string_lossy().into_owned();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        Self::start_in(name, dir, &all)
    }

    /// Starts an agent in an existing directory (its state, spool and
    /// events file as a previous agent there left them).
    pub fn start_in(_name: &str, dir: PathBuf, args: &[&str]) -> Agent {
        Self::launch(dir, args, least_privilege_from_env(), &[], |_| {})
    }

    /// Like [`Agent::start_with_config`], with `prepare` given the agent's
    /// command before it is spawned (say, to run it in a namespace).
    pub fn start_with_config_prepared(
        name: &str,
        config: &str,
        args: &[&str],
        prepare: impl FnOnce(&mut Command),
    ) -> Agent {
        let dir = scratch_dir(name);
        let path = dir.join("config.toml");
        std::fs::write(&path, config.replace("{dir}", &dir.to_string_lossy())).expect("write config");
        let path = path.to_string_lossy().into_owned();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        Self::launch(dir, &all, least_privilege_from_env(), &[], prepare)
    }

    /// Starts an agent with extra environment variables.
    pub fn start_with_env(name: &str, env: &[(&str, &str)], args: &[&str]) -> Agent {
        Self::launch(scratch_dir(name), args, false, env, |_| {})
    }

    /// Starts an agent as root with only [`AGENT_CAPS`], whatever
    /// MCPWATCH_LEAST_PRIVILEGE says.
    pub fn start_least_privileged(name: &str, args: &[&str]) -> Agent {
        Self::launch(scratch_dir(name), args, true, &[], |_| {})
    }

    fn launch(
        dir: PathBuf,
        args: &[&str],
        least_privilege: bool,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command),
    ) -> Agent {
        require_root();
        let socket = dir.join("control.sock");
        let events_path = dir.join("events.jsonl");
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path).expect("agent log");
        // Pins of its own, never the host's: named after the test's directory,
        // so an agent started again in it finds what the previous one kept.
        let pin_dir = match args.iter().position(|a| *a == "--pin") {
            Some(i) => PathBuf::from(args[i + 1]),
            None => Path::new("/sys/fs/bpf").join(dir.file_name().expect("scratch dir name")),
        };
        // Least privilege: root with only AGENT_CAPS, as the systemd unit runs it.
        let mut cmd = match least_privilege {
            true => with_caps(AGENT_CAPS),
            false => Command::new(bin()),
        };
        prepare(&mut cmd);
        let child = cmd
            .arg("agent")
            .arg("--socket")
            .arg(&socket)
            .arg("--events-out")
            .arg(&events_path)
            .args(if args.contains(&"--pin") { None } else { Some("--pin") })
            .args((!args.contains(&"--pin")).then_some(&pin_dir))
            .args(args)
            .args(
                if args
                    .iter()
                    .any(|a| *a == "--config" || *a == "--metrics-address" || *a == "--no-metrics")
                {
                    &[][..]
                } else {
                    &["--metrics-address", "127.0.0.1:0"][..]
                },
            )
            // State (tool pins) in the test's own directory, never the host's.
            .args(if args.contains(&"--state-dir") {
                None
            } else {
                Some("--state-dir")
            })
            .args((!args.contains(&"--state-dir")).then(|| dir.join("state")))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        let mut agent = Agent {
            child: Some(child),
            dir,
            pin_dir,
            remove_pins: true,
            socket,
            events_path,
            log_path,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("agent exited during start-up ({status}):\n{}", self.log());
            }
            let ping = Command::new(bin())
                .arg("status")
                .arg("--socket")
                .arg(&self.socket)
                .output();
            if ping.is_ok_and(|o| o.status.success()) {
                return;
            }
            assert!(Instant::now() < deadline, "agent not ready after 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Every event line written so far (a partly written last line is left out).
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.events_path).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits until `done` holds for the events, returning them.
    pub fn wait_events(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ev = self.events();
            if done(&ev) {
                return ev;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; events:\n{}\nagent log:\n{}",
                    dump(&ev),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `mcpwatch <op> --socket <this agent's>`, which must succeed: its stdout.
    fn command(&self, op: &str) -> Vec<u8> {
        let out = Command::new(bin())
            .arg(op)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .unwrap_or_else(|e| panic!("{op}: {e}"));
        assert!(
            out.status.success(),
            "{op} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `mcpwatch status` as JSON.
    pub fn status(&self) -> Value {
        serde_json::from_slice(&self.command("status")).expect("status JSON")
    }

    /// `host:port` of the agent's metrics endpoint.
    pub fn metrics_address(&self) -> String {
        self.status()["metrics_address"]
            .as_str()
            .expect("metrics enabled")
            .to_owned()
    }

    /// `mcpwatch test-alert`: the id of the alert the agent emitted.
    pub fn test_alert(&self) -> String {
        String::from_utf8_lossy(&self.command("test-alert")).trim().to_owned()
    }

    /// A command that runs `cmd` wrapped as server `server` under this agent.
    pub fn wrap(&self, server: &str, cmd: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("exec")
            .arg("--server")
            .arg(server)
            .arg("--require-agent")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--");
        c.args(cmd);
        // cargo test points LD_LIBRARY_PATH at target/: every process would
        // probe it for its libraries first, burying the events a test checks.
        c.env_remove("LD_LIBRARY_PATH");
        c
    }

    /// `kill -9`: no shutdown, nothing written or removed on the way out;
    /// its pinned kernel objects stay for the next agent started in `dir`.
    pub fn kill9(mut self) {
        self.remove_pins = false;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    /// The agent removes its pins itself: left for the test to check.
    pub fn stop(mut self) -> ExitStatus {
        self.remove_pins = false;
        let mut child = self.child.take().expect("running");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().expect("wait agent") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Detaches what a killed agent kept attached.
        if self.remove_pins {
            let _ = std::fs::remove_dir_all(&self.pin_dir);
        }
    }
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
