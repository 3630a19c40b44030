//! The real agent under test: started with its own socket, pins, state and
//! events file (optionally holding only the systemd unit's capabilities),
//! read back as JSON lines, stopped or killed.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{PATIENCE, bin, dump, output, require_root, scratch_dir};

/// The capabilities the agent runs with in the shipped systemd unit (setpriv's
/// names), for the least-privilege runs (`MCPWATCH_LEAST_PRIVILEGE=1`).
pub const AGENT_CAPS: &str = "bpf,perfmon,sys_ptrace,net_admin,dac_read_search";

/// MCPWATCH_LEAST_PRIVILEGE=1: every agent the harness starts holds only [`AGENT_CAPS`].
fn least_privilege_from_env() -> bool {
    std::env::var("MCPWATCH_LEAST_PRIVILEGE").is_ok_and(|v| v == "1")
}

/// `agent` (added to `c`, which runs the binary) with its own socket and state
/// under `dir` and its pins in `pin_dir`, without the metrics endpoint: for an
/// agent expected to stop at start, run to its end rather than waited for.
pub fn agent_args<'a>(c: &'a mut Command, dir: &Path, pin_dir: &Path) -> &'a mut Command {
    c.arg("agent")
        .arg("--no-metrics")
        .arg("--socket")
        .arg(dir.join("control.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--pin")
        .arg(pin_dir)
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
        Self::start_with_config_prepared(name, config, args, |_| {})
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

    /// `mcpwatch test-alert --no-wait`: the id of the alert the agent
    /// emitted (without waiting for the sinks to deliver it).
    pub fn test_alert(&self) -> String {
        let out = output(
            Command::new(bin())
                .args(["test-alert", "--no-wait", "--socket"])
                .arg(&self.socket),
        );
        assert!(
            out.status.success(),
            "test-alert: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
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
