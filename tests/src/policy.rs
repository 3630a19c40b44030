//! Helpers of the policy tests (tests/tests/policy_*.rs): agents judging
//! against manifests, wrapped sessions, the reference servers' fixtures, the
//! malicious test server.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::*;

/// Starts an agent judging against `manifests`, without users' host configs.
pub fn agent_with(name: &str, manifests: &Path, extra: &[&str]) -> Agent {
    let m = manifests.to_string_lossy().into_owned();
    let mut args = vec!["--manifests", m.as_str(), "--no-user-host-configs"];
    args.extend_from_slice(extra);
    Agent::start(name, &args)
}

/// Runs a wrapped session and waits until the server's processes exited and
/// their events were read; returns every event.
pub fn session(agent: &Agent, server: &str, s: McpSession) -> (Value, Vec<Value>) {
    let report = s.wrapped(agent, server).run();
    let ev = agent.wait_events(&format!("{server} to exit"), |ev| server_done(ev, server));
    // Alerts are written before the exit line that follows them; a short
    // pause lets a straggling child's last events in too.
    std::thread::sleep(Duration::from_millis(300));
    let _ = ev;
    (report, agent.events())
}

/// A scratch manifests directory holding copies of the shipped `names`.
pub fn manifests_copy(test: &str, names: &[&str]) -> PathBuf {
    let d = scratch_dir(&format!("{test}-manifests"));
    for n in names {
        std::fs::copy(
            shipped_manifests().join(format!("{n}.json")),
            d.join(format!("{n}.json")),
        )
        .unwrap();
    }
    d
}

pub fn rules_of(alerts: &[&Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| a["rule"].as_str().unwrap_or("").to_owned())
        .collect()
}

pub fn py() -> String {
    python().to_string_lossy().into_owned()
}

/// Asserts a shipped server's session raised no alert, and says so (the
/// false-alert count the README reports comes from these lines).
pub fn assert_no_alerts(server: &str, ev: &[Value]) {
    let a = alerts(ev, Some(server));
    eprintln!("false alerts for shipped manifest {server}: {}", a.len());
    assert!(
        a.is_empty(),
        "{server}: unexpected alerts:\n{}",
        dump(&a.into_iter().cloned().collect::<Vec<_>>())
    );
    assert!(
        ev.iter().any(|e| e["kind"] == "exec" && e["server"] == server),
        "the server ran under watch"
    );
}

/// A loopback web server on port 80 of an address of its own (the fetch
/// manifest allows ports 80 and 443), answering every GET.
pub fn web_server() -> (String, std::thread::JoinHandle<()>) {
    let last = 2 + (std::process::id() % 250) as u8;
    let addr = format!("127.0.{}.{last}", 100 + (std::process::id() % 100) as u8);
    let l = TcpListener::bind((addr.as_str(), 80)).expect("bind a loopback port 80");
    let h = std::thread::spawn(move || {
        l.set_nonblocking(false).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let (status, body) = if line.contains("robots.txt") {
                ("404 Not Found", "")
            } else {
                (
                    "200 OK",
                    "<html><body><h1>mcpwatch test page</h1><p>hello from loopback</p></body></html>",
                )
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if line.contains("/stop") {
                return;
            }
        }
    });
    (addr, h)
}

pub fn git_repo(test: &str) -> PathBuf {
    let repo = scratch_dir(test);
    let git = |args: &[&str]| {
        let out = output(
            std::process::Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["-c", "user.email=t@example.org", "-c", "user.name=t"])
                .args(args),
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "first\n").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-qm", "first"]);
    std::fs::write(repo.join("README"), "first\nsecond\n").unwrap();
    repo
}

pub fn git_session(repo: &Path) -> McpSession {
    let r = repo.to_string_lossy().into_owned();
    McpSession::new(&[&py(), "-m", "mcp_server_git", "--repository", &r])
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .call("git_status", json!({"repo_path": r}))
        .call("git_diff_unstaged", json!({"repo_path": r}))
        .call("git_add", json!({"repo_path": r, "files": ["README"]}))
        .call("git_commit", json!({"repo_path": r, "message": "second"}))
        .call("git_log", json!({"repo_path": r, "max_count": 5}))
}

/// The malicious server, with a manifest that declares nothing.
pub fn evil_agent(test: &str) -> (Agent, PathBuf) {
    let d = scratch_dir(&format!("{test}-manifests"));
    std::fs::write(
        d.join("evil.json"),
        r#"{"name": "evil", "description": "declares nothing", "mode": "audit"}"#,
    )
    .unwrap();
    (agent_with(test, &d, &[]), d)
}

pub fn evil(calls: &[(&str, Value)]) -> McpSession {
    let script = repo().join("tests/mcp/servers/evil.py");
    let mut s = McpSession::new(&[&py(), script.to_str().unwrap()]);
    for (t, a) in calls {
        s = s.call(t, a.clone());
    }
    s
}

pub fn wait_log(agent: &Agent, what: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while agent.log().matches(what).count() < n {
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the agent reports more than process lifecycle (file and network
/// events come with issue 3's probes). Tests of file and network rules need them.
pub fn reports_file_and_network(ev: &[Value]) -> bool {
    ev.iter().any(|e| {
        !matches!(
            e["kind"].as_str(),
            Some("exec" | "fork" | "exit" | "watch" | "alert" | "loss")
        )
    })
}

/// A copy of a shipped manifest with `edit` applied, alone in a scratch directory.
pub fn narrowed(test: &str, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let d = manifests_copy(test, &[name]);
    let f = d.join(format!("{name}.json"));
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&f, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    d
}
