//! What the bench runs things with: the binaries, a scratch directory with
//! the bench server's manifest and the agent's configurations, a running
//! agent and the floor.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{plan::CLOSED_PORT, workloads::CRATE_SOURCE};
use crate::{cargo, root, run};

/// The bench server in enforce mode (`bench` is the same in audit mode).
pub const ENFORCED: &str = "bench-enforce";
/// The agent's configuration with `[events] level = "alerts"`.
pub const ALERTS_ONLY: &str = "config-alerts-only.toml";
/// A file both bench servers may read, under the scratch directory.
pub const GRANTED_FILE: &str = "grant/file";

pub struct Bins {
    pub agent: PathBuf,
    /// `mcpwatch-load`: the workloads and the floor.
    pub load: PathBuf,
}

/// Builds the release agent and the workload binary (with the floor).
pub fn build() -> anyhow::Result<Bins> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "mcpwatch",
        "--package",
        "mcpwatch-bench",
    ]))?;
    let dir = root().join("target/release");
    Ok(Bins {
        agent: dir.join("mcpwatch"),
        load: dir.join("mcpwatch-load"),
    })
}

/// The bench's private directory: manifests, config, sockets, the alert FIFO.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("mcpwatch-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("manifests"))?;
        fs::create_dir_all(dir.join("deny"))?;
        fs::create_dir_all(dir.join("grant"))?;
        fs::create_dir_all(dir.join("out"))?;
        fs::write(dir.join(GRANTED_FILE), b"declared")?;
        // The bench server's grant: what the loops do, nothing of `deny/`;
        // the same in enforce mode for `bench-enforce` (the enforcement
        // section). Both write their results in `out/`.
        for (name, mode) in [("bench", "audit"), (ENFORCED, "enforce")] {
            fs::write(
                dir.join(format!("manifests/{name}.json")),
                json!({
                    "name": name,
                    "mode": mode,
                    "match": {"server": [name]},
                    "read": ["/nonexistent-mcpwatch-bench/**", format!("{}/grant/**", dir.display())],
                    "write": [format!("{}/out/**", dir.display())],
                    "exec": ["/bin/true"],
                    "network": {"outbound": {"allow_host": ["127.0.0.1"], "allow_port": [CLOSED_PORT]}}
                })
                .to_string(),
            )?;
        }
        // The macro workload's crate: no dependencies, some generic code.
        fs::create_dir_all(dir.join("crate/src"))?;
        fs::write(
            dir.join("crate/Cargo.toml"),
            "[package]\nname = \"bench-build\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        )?;
        fs::write(dir.join("crate/src/main.rs"), CRATE_SOURCE)?;
        let fifo = dir.join("alerts.fifo");
        nix_mkfifo(&fifo)?;
        let config = |sink: &str| {
            format!(
                r#"state_dir = "{d}/state"
[metrics]
address = "127.0.0.1:0"
[policy]
manifest_dirs = ["{d}/manifests"]
# Every alert of the latency run goes out (no flood folding).
alert_distinct_max = 100000000
{sink}"#,
                d = dir.display()
            )
        };
        // Alerts in the event stream only (/dev/null) for the loops...
        fs::write(dir.join("config.toml"), config(""))?;
        // ...and also to the FIFO the latency reader holds open.
        let sink = format!(
            "[[sinks]]\nname = \"bench\"\nfile = {{ path = \"{}\", rotate_bytes = 1099511627776 }}\n",
            fifo.display()
        );
        fs::write(dir.join("config-alerts.toml"), config(&sink))?;
        // Event lines off (alerts only): the reader's cost without the JSON.
        fs::write(dir.join(ALERTS_ONLY), config("[events]\nlevel = \"alerts\"\n"))?;
        Ok(Self { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn nix_mkfifo(path: &Path) -> anyhow::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        bail!("mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

/// A running agent.
pub struct Agent {
    child: Child,
    bin: PathBuf,
    socket: PathBuf,
}

impl Agent {
    /// `config`: `config.toml`, or `config-alerts.toml` (alerts to the FIFO:
    /// a reader must hold it open).
    pub fn start(bins: &Bins, scratch: &Scratch, config: &str) -> anyhow::Result<Self> {
        Self::start_on(bins, scratch, config, None)
    }

    /// [`Agent::start`], pinned to `cpu` when given (the side-by-side runs).
    pub fn start_on(bins: &Bins, scratch: &Scratch, config: &str, cpu: Option<u32>) -> anyhow::Result<Self> {
        let socket = scratch.path("control.sock");
        let log = fs::File::create(scratch.path("agent.log"))?;
        let child = pinned(cpu, &bins.agent)
            .args(["agent", "--config"])
            .arg(scratch.path(config))
            .args(["--events-out", "/dev/null", "--no-user-host-configs", "--socket"])
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the agent")?;
        let agent = Agent {
            child,
            bin: bins.agent.clone(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while agent.status().is_err() {
            if Instant::now() > deadline {
                bail!("the agent did not answer in 120 s:\n{}", agent.log(scratch));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(agent)
    }

    fn log(&self, scratch: &Scratch) -> String {
        fs::read_to_string(scratch.path("agent.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn status(&self) -> anyhow::Result<Value> {
        let out = Command::new(&self.bin)
            .args(["status", "--socket"])
            .arg(&self.socket)
            .output()?;
        if !out.status.success() {
            bail!("status: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// (events decoded, events lost) once the ring is drained: the counts
    /// stop moving.
    pub fn settled_counts(&self) -> anyhow::Result<(u64, u64)> {
        let mut last = (u64::MAX, u64::MAX);
        loop {
            let s = self.status()?;
            let now = (s["events"].as_u64().unwrap_or(0), s["lost"].as_u64().unwrap_or(0));
            if now == last {
                return Ok(now);
            }
            last = now;
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Wraps `cmd` as a watched server.
    pub fn wrap(&self, server: &str, cmd: &[&str]) -> Command {
        self.wrap_on(None, server, cmd)
    }

    /// [`Agent::wrap`], the wrapper and the server pinned to `cpu` when given.
    pub fn wrap_on(&self, cpu: Option<u32>, server: &str, cmd: &[&str]) -> Command {
        let mut c = pinned(cpu, &self.bin);
        c.args(["exec", "--server", server, "--require-agent", "--socket"])
            .arg(&self.socket)
            .arg("--")
            .args(cmd);
        c
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        let status = interrupt(&mut self.child)?;
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        Ok(())
    }
}

/// `program`, or `taskset -c CPU program`.
pub fn pinned(cpu: Option<u32>, program: &Path) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// SIGINT to `child` (the agent and the floor shut down on it), then its status.
pub fn interrupt(child: &mut Child) -> std::io::Result<std::process::ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait()
}

impl Drop for Agent {
    /// On an error path: no agent outlives the bench.
    fn drop(&mut self) {
        let _ = interrupt(&mut self.child);
    }
}

/// The floor programs, attached until dropped.
pub struct Floor(Child);

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = interrupt(&mut self.0);
    }
}

impl Floor {
    pub fn start(bins: &Bins) -> anyhow::Result<Self> {
        let mut child = Command::new(&bins.load)
            .arg("floor")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the floor")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = child.wait();
            bail!("the floor did not attach");
        }
        Ok(Floor(child))
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        interrupt(&mut self.0)?;
        Ok(())
    }
}
