//! `mcpwatch top` in a real terminal (tmux): what a person sees while a real
//! MCP server's tools are called, at 120x35 and at 80x24, across a resize and
//! an agent restart; `q` gives the terminal back.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use mcpwatch_tests::{policy::*, *};
use serde_json::json;

/// A detached tmux session on a server of its own, killed on drop (the
/// server is a daemon: left behind, it would hold the test lock's fd).
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `cmd` (a shell command line) in a `w`x`h` terminal.
    fn start(test: &str, w: u16, h: u16, cmd: &str) -> Tmux {
        let t = Tmux {
            socket: format!("mcpwatch-{test}-{}", std::process::id()),
        };
        let out = t.tmux(&["new-session", "-d", "-x", &w.to_string(), "-y", &h.to_string(), cmd]);
        assert!(out.status.success(), "tmux: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// Waits until the screen passes `done`; returns it.
    fn wait(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let s = self.screen();
            if done(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "the screen never showed {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// `mcpwatch top` against `socket`, then what its exit left: its status and
/// whether the terminal is back in cooked mode with echo (`stty`).
fn top_cmd(socket: &Path) -> String {
    format!(
        "{} top --socket {}; echo \"top exited $?\"; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo | tr '\\n' ' '; echo '<- tty'; sleep 600",
        bin().display(),
        socket.display()
    )
}

fn quit_and_check_terminal(t: &Tmux) {
    t.keys(&["q"]);
    let s = t.wait("top's exit and the terminal's modes", |s| s.contains("<- tty"));
    assert!(s.contains("top exited 0"), "{s}");
    assert!(
        s.contains("icanon echo <- tty"),
        "the terminal is back in cooked mode with echo:\n{s}"
    );
    assert!(!s.contains("loss and sinks"), "the alternate screen is left:\n{s}");
}

#[test]
fn top_shows_the_server_its_tool_rate_and_the_alert_live() {
    let manifests = scratch_dir("top-manifests");
    std::fs::write(manifests.join("evil.json"), r#"{"name": "evil", "mode": "audit"}"#).unwrap();
    let agent = agent_with("top", &manifests, &[]);
    let t = Tmux::start("top", 120, 35, &top_cmd(&agent.socket));
    t.wait("the connected agent", |s| s.contains("servers 0 ·"));
    let home = scratch_dir("top-home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
    // The last call keeps the server alive while the screen is read.
    let session = evil(&[
        ("hello", json!({"name": "x"})),
        ("read_ssh_key", json!({"home": home.to_string_lossy()})),
        ("run_shell", json!({"command": "sleep 8"})),
    ])
    .env("HOME", home.to_str().unwrap())
    .wrapped(&agent, "evil");
    let client = std::thread::spawn(move || session.run());
    let rate = regex::Regex::new(r"read_ssh_key +(\d+\.\d) +(\d+) ").unwrap();
    let s = t.wait("evil, read_ssh_key's rate and cred.ssh", |s| {
        s.contains("cred.ssh")
            && s.lines().any(|l| l.contains("│evil ") && l.contains(" audit "))
            && rate.captures(s).is_some_and(|c| &c[1] != "0.0" && &c[2] == "1")
    });
    assert!(s.contains("HIGH"), "the alert's severity:\n{s}");
    assert!(s.contains("servers 1 ·"), "{s}");
    client.join().expect("MCP session");
    quit_and_check_terminal(&t);
    assert!(agent.stop().success());
}

#[test]
fn top_fits_80x24_survives_resizes_and_reconnects_to_a_restarted_agent() {
    let dir = scratch_dir("top-small");
    let agent = Agent::start_in("top-small", dir.clone(), &["--no-user-host-configs"]);
    // Not root: told at once, on the terminal, not by a screen that keeps retrying.
    let out = output(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(["top", "--socket"])
            .arg(&agent.socket),
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("root only"),
        "{out:?}"
    );
    let t = Tmux::start("top-small", 80, 24, &top_cmd(&agent.socket));
    agent.test_alert();
    let s = t.wait("every pane and the test alert", |s| s.contains("agent.test"));
    for want in [
        " servers (0) ",
        " tools (calls/s over 10s) ",
        " alerts (",
        " loss and sinks ",
        "loss: ring 0",
        "q quit",
    ] {
        assert!(s.contains(want), "{want:?} missing at 80x24:\n{s}");
    }
    assert_eq!(s.lines().count(), 24, "{s}");
    assert!(s.lines().all(|l| l.chars().count() <= 80), "{s}");
    for (w, h) in [("40", "10"), ("12", "4"), ("80", "24")] {
        assert!(t.tmux(&["resize-window", "-x", w, "-y", h]).status.success());
        std::thread::sleep(Duration::from_millis(300));
    }
    t.wait("the screen redrawn at 80x24", |s| {
        s.contains(" loss and sinks ") && !s.contains("top exited")
    });
    assert!(agent.stop().success());
    t.wait("the lost agent", |s| s.contains("agent unreachable"));
    let agent = Agent::start_in("top-small", dir, &["--no-user-host-configs"]);
    t.wait("the restarted agent", |s| s.contains("reconnected (1x)"));
    quit_and_check_terminal(&t);
    assert!(agent.stop().success());
}
