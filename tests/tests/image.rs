//! The container image as a fleet runs it: built by the project's own script
//! (packaging/image/build.sh, what `cargo xtask image` runs) `FROM scratch`
//! from the binary under test, started by podman the way the DaemonSet starts
//! it — only the unit's five capabilities, the host's PIDs, bpffs and tracefs
//! from the host, a read-only root, the project's seccomp profile, the chart's
//! configuration and a manifests directory where the ConfigMap goes — it
//! loads the real programs and judges a process started on the host.
//!
//! podman runs here with runc and cgroupfs and without default ulimits
//! (Debian's crun and podman's ulimits fail on these machines; see
//! shared/notes/toolchain.md). The test is skipped, saying why, only when
//! podman cannot run at all (`cargo xtask test` installs it).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use mcpwatch_tests::*;
use serde_json::{Value, json};

/// Everything the test made, removed even when it fails.
struct Container {
    name: String,
    image: String,
    conf: PathBuf,
    pin_dir: PathBuf,
}

impl Container {
    fn podman(&self) -> Command {
        podman(&self.conf)
    }

    fn logs(&self) -> String {
        let out = output(self.podman().args(["logs", &self.name]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn inspect(&self, format: &str) -> String {
        let out = output(self.podman().args(["inspect", "--format", format, &self.name]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output(self.podman().args(["rm", "--force", "--time", "5", &self.name]));
        let _ = output(self.podman().args(["rmi", "--force", &self.image]));
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

fn podman(conf: &Path) -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
        .env("CONTAINERS_CONF", conf);
    c
}

/// Why podman cannot run here, if it cannot.
fn podman_unusable(conf: &Path) -> Option<String> {
    match podman(conf).arg("info").output() {
        Err(e) => Some(format!(
            "podman cannot be started ({e}); `cargo xtask test` installs it"
        )),
        Ok(o) if !o.status.success() => Some(format!(
            "`podman info` fails: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    }
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_image_runs_with_the_daemonsets_capabilities_and_judges_a_host_process() {
    require_root();
    let d = scratch_dir("image");
    let conf = d.join("containers.conf");
    std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    if let Some(why) = podman_unusable(&conf) {
        eprintln!("skipped: {why}");
        return;
    }
    let id = std::process::id();
    let c = Container {
        name: format!("mcpwatch-it-image-{id}"),
        image: format!("localhost/mcpwatch-it:{id}"),
        conf: conf.clone(),
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/mcpwatch-it-image-{id}")),
    };
    let built = output(
        Command::new("sh")
            .arg(repo().join("packaging/image/build.sh"))
            .arg(bin())
            .arg(&c.image)
            .env("CONTAINERS_CONF", &conf),
    );
    assert!(built.status.success(), "build.sh: {built:?}");

    // The fleet's manifests (the ConfigMap's files): a server found by its
    // script on the command line, allowed to read nothing and run nothing.
    let script_name = format!("mcpwatch-image-server-{id}.sh");
    // Laid out as the kubelet lays out a ConfigMap volume: the files are links
    // through `..data`, a link to a timestamped directory.
    let fleet = d.join("fleet");
    std::fs::create_dir_all(fleet.join("..2026_12_01_00_00_00.1")).unwrap();
    let manifest = json!({
        "name": "imaged",
        "mode": "audit",
        "match": {"argv": [script_name.replace('.', "\\.")]},
        "read": [],
        "exec": [],
    });
    std::fs::write(fleet.join("..2026_12_01_00_00_00.1/imaged.json"), manifest.to_string()).unwrap();
    std::os::unix::fs::symlink("..2026_12_01_00_00_00.1", fleet.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/imaged.json", fleet.join("imaged.json")).unwrap();
    let (state, logs, run) = (d.join("state"), d.join("log"), d.join("run"));
    for dir in [&state, &logs, &run] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let port = free_port();
    let vol = |host: &Path, guest: &str, mode: &str| format!("{}:{guest}:{mode}", host.display());
    let started = output(
        c.podman()
            .args(["run", "--detach", "--name", &c.name])
            // What the DaemonSet grants, and nothing else. The host's network
            // (the DaemonSet's pod has its own) only so that the test reaches
            // /readyz on loopback without a bridge.
            .args(["--pid=host", "--network=host", "--read-only", "--cap-drop=all"])
            .arg(format!("--cap-add={}", caps_for_podman()))
            .arg(format!(
                "--security-opt=seccomp={}",
                repo().join("packaging/image/seccomp.json").display()
            ))
            .args(["--tmpfs", "/tmp"])
            .args(["-v", "/sys/fs/bpf:/sys/fs/bpf:rw"])
            .args(["-v", "/sys/kernel/tracing:/sys/kernel/tracing:rw"])
            .args([
                "-v",
                &vol(&repo().join("deploy/helm/mcpwatch/files"), "/etc/mcpwatch/config", "ro"),
            ])
            .args(["-v", &vol(&fleet, "/etc/mcpwatch/fleet", "ro")])
            .args(["-v", &vol(&state, "/var/lib/mcpwatch", "rw")])
            .args(["-v", &vol(&logs, "/var/log/mcpwatch", "rw")])
            .args(["-v", &vol(&run, "/run/mcpwatch", "rw")])
            .args(["-e", "RUST_LOG=info"])
            .arg(&c.image)
            // The DaemonSet's arguments; the pins and metrics port of this test's own.
            .args(["agent", "--config", "/etc/mcpwatch/config/config.toml"])
            .args(["--events-out", "/var/log/mcpwatch/events.jsonl"])
            .arg("--pin")
            .arg(&c.pin_dir)
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{port}")),
    );
    assert!(started.status.success(), "podman run: {started:?}");

    // Ready: the control socket answers on the host (where `mcpwatch exec` finds it).
    let socket = run.join("control.sock");
    wait_for(
        "the containerized agent to answer on its socket",
        Duration::from_secs(60),
        || {
            assert_eq!(
                c.inspect("{{.State.Running}}"),
                "true",
                "the agent's container exited:\n{}",
                c.logs()
            );
            output(Command::new(bin()).arg("status").arg("--socket").arg(&socket))
                .status
                .success()
                .then_some(())
        },
        || c.logs(),
    );
    let (code, _) = http_get(&format!("127.0.0.1:{port}"), "/readyz").unwrap();
    assert_eq!(code, 200, "/readyz (the DaemonSet's readiness probe)");

    // Exactly the unit's capabilities, under a seccomp filter.
    let pid = c.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    // bpf (39), perfmon (38), sys_ptrace (19), net_admin (12), dac_read_search (2).
    assert_eq!(field("CapEff:"), "000000c000081004", "{status}");
    assert_eq!(field("CapBnd:"), "000000c000081004", "{status}");
    assert_eq!(
        field("Seccomp:"),
        "2",
        "the project's seccomp profile applies: {status}"
    );
    let agent_log = c.logs();
    assert!(
        agent_log.contains("enforcement layer kill: enforced"),
        "the kill layer's self-test runs in the image:\n{agent_log}"
    );

    // A server started on the host, outside any container. It reads once the
    // agent watches it: the file events of a process held pending (found by a
    // manifest at exec, not yet matched in userspace) are not reported, which
    // is discovery's to fix, not the image's.
    let server = d.join(&script_name);
    script(&server, "read go\ncat /etc/hostname >/dev/null");
    let mut child = Command::new(&server)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events_path = logs.join("events.jsonl");
    wait_for(
        "the host's server to be watched",
        PATIENCE,
        || {
            events(&events_path)
                .iter()
                .any(|e| e["kind"] == "watch" && e["server"] == "imaged")
                .then_some(())
        },
        || dump(&events(&events_path)),
    );
    {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    assert!(child.wait().unwrap().success());
    let ev = wait_for(
        "the alerts of the host's server",
        PATIENCE,
        || {
            let ev = events(&events_path);
            let alerted = |rule: &str| ev.iter().any(|e| e["kind"] == "alert" && e["rule"] == rule);
            (alerted("file.read_undeclared") && alerted("exec.undeclared")).then_some(ev)
        },
        || format!("{}\n{}", dump(&events(&events_path)), c.logs()),
    );
    let a = alerts(&ev, Some("imaged"));
    let read = a
        .iter()
        .find(|e| e["rule"] == "file.read_undeclared")
        .expect("a read alert");
    assert_eq!(read["evidence"]["path"], "/etc/hostname", "{}", dump(&ev));
    assert_eq!(read["manifest"], "/etc/mcpwatch/fleet/imaged.json");
    assert!(read["exe"].as_str().unwrap_or("").ends_with("/cat"), "{read}");
    let exec = a
        .iter()
        .find(|e| e["rule"] == "exec.undeclared")
        .expect("an exec alert");
    assert!(
        exec["evidence"]["program"].as_str().unwrap_or("").ends_with("/cat"),
        "{exec}"
    );

    // A clean stop: exit 0, the pins removed.
    let stopped = output(c.podman().args(["stop", "--time", "20", &c.name]));
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0", "{}", c.logs());
    assert!(!c.pin_dir.exists(), "a clean stop removes the pins");
    let log = c.logs();
    assert!(!log.contains("ERROR"), "{log}");
}

/// podman's names for [`AGENT_CAPS`] (setpriv's): the DaemonSet's set.
fn caps_for_podman() -> String {
    AGENT_CAPS
        .split(',')
        .map(|c| format!("CAP_{}", c.trim().to_uppercase()))
        .collect::<Vec<_>>()
        .join(",")
}
