//! Declared privileges end to end: the real agent, the real reference servers
//! from npm and PyPI driven by the official Python SDK client, the shipped
//! manifests, and malicious servers written for these tests.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use mcpwatch_tests::*;
use serde_json::{Value, json};

/// Starts an agent judging against `manifests`, without users' host configs.
fn agent_with(name: &str, manifests: &Path, extra: &[&str]) -> Agent {
    let m = manifests.to_string_lossy().into_owned();
    let mut args = vec!["--manifests", m.as_str(), "--no-user-host-configs"];
    args.extend_from_slice(extra);
    Agent::start(name, &args)
}

/// Runs a wrapped session and waits until the server's processes exited and
/// their events were read; returns every event.
fn session(agent: &Agent, server: &str, s: McpSession) -> (Value, Vec<Value>) {
    let report = s.wrapped(agent, server).run();
    let ev = agent.wait_events(&format!("{server} to exit"), |ev| server_done(ev, server));
    // Alerts are written before the exit line that follows them; a short
    // pause lets a straggling child's last events in too.
    std::thread::sleep(Duration::from_millis(300));
    let _ = ev;
    (report, agent.events())
}

/// A scratch manifests directory holding copies of the shipped `names`.
fn manifests_copy(test: &str, names: &[&str]) -> PathBuf {
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

fn rules_of(alerts: &[&Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|a| a["rule"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn py() -> String {
    python().to_string_lossy().into_owned()
}

/// Asserts a shipped server's session raised no alert, and says so (the
/// false-alert count the README reports comes from these lines).
fn assert_no_alerts(server: &str, ev: &[Value]) {
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

#[test]
fn filesystem_session_with_its_manifest_raises_no_alert() {
    let agent = agent_with("pol-fs", &shipped_manifests(), &[]);
    let root = scratch_dir("pol-fs-root");
    std::fs::write(root.join("notes.txt"), "hello\n").unwrap();
    let r = root.to_string_lossy().into_owned();
    let node = node_server("server-filesystem");
    let s = McpSession::new(&["node", node.to_str().unwrap(), &r])
        .call("list_allowed_directories", json!({}))
        .call("read_text_file", json!({"path": format!("{r}/notes.txt")}))
        .call(
            "write_file",
            json!({"path": format!("{r}/out.txt"), "content": "written"}),
        )
        .call("create_directory", json!({"path": format!("{r}/sub")}))
        .call("list_directory", json!({"path": r}))
        .call("search_files", json!({"path": r, "pattern": "*.txt"}))
        .call("get_file_info", json!({"path": format!("{r}/out.txt")}));
    let (report, ev) = session(&agent, "filesystem", s);
    assert_eq!(report["calls"][2]["is_error"], false, "{report}");
    assert_eq!(std::fs::read_to_string(root.join("out.txt")).unwrap(), "written");
    assert_no_alerts("filesystem", &ev);
    assert!(agent.stop().success());
}

#[test]
fn everything_session_with_its_manifest_raises_no_alert() {
    let agent = agent_with("pol-every", &shipped_manifests(), &[]);
    let node = node_server("server-everything");
    let s = McpSession::new(&["node", node.to_str().unwrap(), "stdio"])
        .call("echo", json!({"message": "hi"}))
        .call("get-sum", json!({"a": 2, "b": 3}))
        .call("get-tiny-image", json!({}))
        .call("get-structured-content", json!({"location": "New York"}));
    let (report, ev) = session(&agent, "everything", s);
    assert!(
        report["calls"][1]["text"].as_str().unwrap_or("").contains('5'),
        "{report}"
    );
    assert_no_alerts("everything", &ev);
    assert!(agent.stop().success());
}

#[test]
fn memory_session_through_npx_with_its_manifest_raises_no_alert() {
    let agent = agent_with("pol-memory", &shipped_manifests(), &[]);
    // npx from the project that has the package: resolved locally, offline.
    let s = McpSession::new(&["npx", "--no-install", "mcp-server-memory"])
        .cwd(&testenv().join("node"))
        .call(
            "create_entities",
            json!({"entities": [{"name": "mcpwatch", "entityType": "tool", "observations": ["watches MCP servers"]}]}),
        )
        .call("search_nodes", json!({"query": "mcpwatch"}))
        .call("read_graph", json!({}));
    let (report, ev) = session(&agent, "memory", s);
    assert!(
        report["calls"][1]["text"].as_str().unwrap_or("").contains("mcpwatch"),
        "{report}"
    );
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "exec" && e["server"] == "memory" && e["argv"][0] == "sh"),
        "npx ran the bin through sh -c (the npx baseline covers it)"
    );
    assert_no_alerts("memory", &ev);
    assert!(agent.stop().success());
}

/// A loopback web server on port 80 of an address of its own (the fetch
/// manifest allows ports 80 and 443), answering every GET.
fn web_server() -> (String, std::thread::JoinHandle<()>) {
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

#[test]
fn fetch_session_with_its_manifest_raises_no_alert() {
    let agent = agent_with("pol-fetch", &shipped_manifests(), &[]);
    let (addr, web) = web_server();
    // The server refuses loopback URLs unless told otherwise; the test web
    // server is on loopback (tests reach no other network).
    let s = McpSession::new(&[&py(), "-m", "mcp_server_fetch", "--allow-private-ips"])
        .call("fetch", json!({"url": format!("http://{addr}/page")}))
        .call("fetch", json!({"url": format!("http://{addr}/stop"), "raw": true}));
    let (report, ev) = session(&agent, "fetch", s);
    assert!(
        report["calls"][0]["text"]
            .as_str()
            .unwrap_or("")
            .contains("hello from loopback"),
        "{report}"
    );
    web.join().unwrap();
    assert_no_alerts("fetch", &ev);
    assert!(agent.stop().success());
}

fn git_repo(test: &str) -> PathBuf {
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

fn git_session(repo: &Path) -> McpSession {
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

#[test]
fn git_session_with_its_manifest_raises_no_alert() {
    let agent = agent_with("pol-git", &shipped_manifests(), &[]);
    let repo = git_repo("pol-git-repo");
    let (report, ev) = session(&agent, "git", git_session(&repo));
    assert!(
        report["calls"][4]["text"].as_str().unwrap_or("").contains("second"),
        "{report}"
    );
    assert!(
        ev.iter()
            .any(|e| e["kind"] == "exec" && e["server"] == "git" && e["exe"].as_str().unwrap_or("").ends_with("/git")),
        "the server ran git"
    );
    assert_no_alerts("git", &ev);
    assert!(agent.stop().success());
}

#[test]
fn git_session_with_exec_narrowed_raises_exactly_exec_undeclared() {
    let d = manifests_copy("pol-git-narrow", &["git"]);
    let f = d.join("git.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    m["exec"] = json!([]);
    std::fs::write(&f, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let agent = agent_with("pol-git-narrow", &d, &[]);
    let repo = git_repo("pol-git-narrow-repo");
    let (_, ev) = session(&agent, "git", git_session(&repo));
    let a = alerts(&ev, Some("git"));
    assert_eq!(rules_of(&a), ["exec.undeclared"], "{}", dump(&ev));
    let a = a[0];
    assert!(a["evidence"]["program"].as_str().unwrap().ends_with("/git"), "{a}");
    assert_eq!(a["severity"], "medium");
    assert_eq!(a["mitre"]["id"], "T1059");
    assert_eq!(a["manifest"], f.to_string_lossy().as_ref());
    assert_eq!(a["declared"]["exec"][0], "(baseline: python)");
    assert!(a["ancestry"].as_array().is_some_and(|x| !x.is_empty()));
    // git ran several times: one alert in full, the repeats counted (summary after the window).
    let git_execs = ev
        .iter()
        .filter(|e| e["kind"] == "exec" && e["server"] == "git" && e["exe"].as_str().unwrap_or("").ends_with("/git"))
        .count();
    assert!(git_execs > 1, "the session runs git more than once ({git_execs})");
    assert!(agent.stop().success());
}

#[test]
fn time_session_with_its_manifest_raises_no_alert() {
    let agent = agent_with("pol-time", &shipped_manifests(), &[]);
    let s = McpSession::new(&[&py(), "-m", "mcp_server_time", "--local-timezone", "UTC"])
        .call("get_current_time", json!({"timezone": "Europe/Paris"}))
        .call(
            "convert_time",
            json!({"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
        );
    let (report, ev) = session(&agent, "time", s);
    assert!(
        report["calls"][1]["text"].as_str().unwrap_or("").contains("21:00"),
        "{report}"
    );
    assert_no_alerts("time", &ev);
    assert!(agent.stop().success());
}

/// The malicious server, with a manifest that declares nothing.
fn evil_agent(test: &str) -> (Agent, PathBuf) {
    let d = scratch_dir(&format!("{test}-manifests"));
    std::fs::write(
        d.join("evil.json"),
        r#"{"name": "evil", "description": "declares nothing", "mode": "audit"}"#,
    )
    .unwrap();
    (agent_with(test, &d, &[]), d)
}

fn evil(calls: &[(&str, Value)]) -> McpSession {
    let script = repo().join("tests/mcp/servers/evil.py");
    let mut s = McpSession::new(&[&py(), script.to_str().unwrap()]);
    for (t, a) in calls {
        s = s.call(t, a.clone());
    }
    s
}

#[test]
fn a_tool_running_sh_c_raises_exec_shell() {
    let (agent, _) = evil_agent("pol-shell");
    let (_, ev) = session(
        &agent,
        "evil",
        evil(&[("hello", json!({"name": "x"})), ("run_shell", json!({"command": "id"}))]),
    );
    let a = alerts(&ev, Some("evil"));
    // The shell, then what it ran.
    assert_eq!(rules_of(&a), ["exec.shell", "exec.undeclared"], "{}", dump(&ev));
    assert_eq!(a[1]["evidence"]["program"], "/usr/bin/id");
    assert_eq!(a[0]["severity"], "high");
    assert_eq!(a[0]["mitre"]["id"], "T1059.004");
    assert_eq!(a[0]["evidence"]["argv"], json!(["sh", "-c", "id"]));
    assert!(
        a[0]["ancestry"][0]["exe"].as_str().unwrap_or("").contains("python"),
        "{}",
        a[0]
    );
    assert!(agent.stop().success());
}

#[test]
fn a_reverse_shell_to_a_loopback_listener_raises_exec_reverse_shell() {
    let (agent, _) = evil_agent("pol-revshell");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let events_agent = &agent;
    let attacker = std::thread::scope(|sc| {
        let h = sc.spawn(move || {
            let (mut s, _) = l.accept().expect("the shell connects back");
            // Keep the shell alive until the agent has judged its exec.
            events_agent.wait_events("reverse shell alert", |ev| {
                alerts(ev, Some("evil"))
                    .iter()
                    .any(|a| a["rule"] == "exec.reverse_shell")
            });
            s.write_all(b"echo pwned; exit\n").unwrap();
            let mut out = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut out);
            out
        });
        let (report, ev) = session(&agent, "evil", evil(&[("reverse_shell", json!({"port": port}))]));
        (h.join().unwrap(), report, ev)
    });
    let (out, report, ev) = attacker;
    assert!(
        out.contains("pwned"),
        "the shell really served the listener: {out:?} {report}"
    );
    let a = alerts(&ev, Some("evil"));
    let expected: &[&str] = if reports_file_and_network(&ev) {
        &["net.connect_undeclared", "exec.reverse_shell"]
    } else {
        &["exec.reverse_shell"]
    };
    assert_eq!(rules_of(&a), expected, "{}", dump(&ev));
    let shell = a.last().unwrap();
    assert_eq!(shell["severity"], "critical");
    assert_eq!(shell["evidence"]["stdio"], json!(["socket", "socket", "socket"]));
    assert!(agent.stop().success());
}

#[test]
fn a_tool_writing_then_running_a_script_raises_write_then_exec() {
    let (agent, _) = evil_agent("pol-drop");
    let dir = scratch_dir("pol-drop-dir");
    let (report, ev) = session(
        &agent,
        "evil",
        evil(&[("drop_and_run", json!({"directory": dir.to_string_lossy()}))]),
    );
    assert!(
        report["calls"][0]["text"].as_str().unwrap_or("").contains("dropped"),
        "{report}"
    );
    let a = alerts(&ev, Some("evil"));
    // The write itself is undeclared too (when file events are reported).
    let expected: &[&str] = if reports_file_and_network(&ev) {
        &["file.write_undeclared", "exec.write_then_exec"]
    } else {
        &["exec.write_then_exec"]
    };
    assert_eq!(rules_of(&a), expected, "{}", dump(&ev));
    let drop = a.last().unwrap();
    assert_eq!(
        drop["evidence"]["filename"],
        dir.join("payload.sh").to_string_lossy().as_ref()
    );
    assert_eq!(drop["mitre"]["id"], "T1105");
    assert!(agent.stop().success());
}

#[test]
fn a_server_without_manifest_is_watched_and_flagged_undeclared() {
    let (agent, _) = evil_agent("pol-undeclared");
    let (_, ev) = session(&agent, "stranger", evil(&[("run_shell", json!({"command": "true"}))]));
    let a = alerts(&ev, Some("stranger"));
    assert_eq!(rules_of(&a), ["server.undeclared", "exec.shell"], "{}", dump(&ev));
    assert_eq!(a[0]["manifest"], "(built-in least privilege)");
    assert_eq!(a[1]["manifest"], "(built-in least privilege)");
    assert!(agent.stop().success());
}

#[test]
fn a_server_from_a_host_config_is_discovered_without_the_wrapper() {
    let d = manifests_copy("pol-hostcfg", &["time"]);
    let cfg = scratch_dir("pol-hostcfg-claude").join("claude_desktop_config.json");
    let args = ["-m", "mcp_server_time", "--local-timezone", "Europe/Berlin"];
    std::fs::write(
        &cfg,
        serde_json::to_string_pretty(&json!({"mcpServers": {"my clock": {"command": py(), "args": args}}})).unwrap(),
    )
    .unwrap();
    let agent = agent_with("pol-hostcfg", &d, &["--host-config", cfg.to_str().unwrap()]);
    let mut cmd = vec![py()];
    cmd.extend(args.iter().map(|s| s.to_string()));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    McpSession::new(&cmd)
        .call("get_current_time", json!({"timezone": "UTC"}))
        .run();
    let ev = agent.wait_events("my-clock to exit", |ev| server_done(ev, "my-clock"));
    let watch: Vec<&Value> = of_kind(&ev, "watch")
        .into_iter()
        .filter(|e| e["server"] == "my-clock")
        .collect();
    assert_eq!(watch.len(), 1, "{}", dump(&ev));
    assert_eq!(watch[0]["reason"], "rule");
    // Judged against the time manifest (found by its match rule): no alert, not undeclared.
    assert!(alerts(&ev, Some("my-clock")).is_empty(), "{}", dump(&ev));
    assert!(
        agent.log().contains("1 servers from host configurations"),
        "{}",
        agent.log()
    );
    assert!(agent.stop().success());
}

fn wait_log(agent: &Agent, what: &str, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while agent.log().matches(what).count() < n {
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn manifests_reload_on_change_and_sighup_and_bad_ones_keep_the_last_good() {
    let (agent, d) = evil_agent("pol-reload");
    let f = d.join("evil.json");
    let shell = || evil(&[("run_shell", json!({"command": "true"}))]);
    let (_, ev) = session(&agent, "evil", shell());
    assert_eq!(rules_of(&alerts(&ev, Some("evil"))), ["exec.shell"]);

    // Declare the shell: picked up by the poll, no alert for the second session.
    std::fs::write(&f, r#"{"name": "evil", "exec": ["sh"]}"#).unwrap();
    wait_log(&agent, "reloaded", 1);
    let before = alerts(&agent.events(), Some("evil")).len();
    let (_, ev) = session(&agent, "evil", shell());
    assert_eq!(alerts(&ev, Some("evil")).len(), before, "{}", dump(&ev));

    // A broken edit: reported with file, line and field; the last good version stays.
    std::fs::write(&f, "{\n  \"name\": \"evil\",\n  \"exec\": \"sh\"\n}\n").unwrap();
    let ev = agent.wait_events("manifest_invalid alert", |ev| {
        ev.iter().any(|e| e["rule"] == "policy.manifest_invalid")
    });
    let bad = ev.iter().find(|e| e["rule"] == "policy.manifest_invalid").unwrap();
    assert_eq!(bad["evidence"]["file"], f.to_string_lossy().as_ref());
    assert_eq!(bad["evidence"]["line"], 3);
    assert_eq!(bad["evidence"]["field"], "exec");
    assert!(
        bad["evidence"]["error"].as_str().unwrap().contains("invalid type"),
        "{bad}"
    );
    assert_eq!(bad["evidence"]["kept_last_good_version"], true);
    assert!(agent.log().contains(&format!("{}:3:", f.display())), "{}", agent.log());
    let before = alerts(&agent.events(), Some("evil")).len();
    let (_, ev) = session(&agent, "evil", shell());
    assert_eq!(
        alerts(&ev, Some("evil")).len(),
        before,
        "still judged by the last good version"
    );

    // SIGHUP reloads at once, even with nothing changed.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    wait_log(&agent, "SIGHUP: reloading", 1);
    assert!(agent.stop().success());
}

#[test]
fn check_manifests_reports_file_line_field_and_what_is_wrong() {
    let d = scratch_dir("pol-check");
    let good = d.join("good.json");
    std::fs::write(
        &good,
        r#"{"read": ["~/x"], "network": {"outbound": {"allow_host": [".example.com"]}}}"#,
    )
    .unwrap();
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{\n  \"read\": [\"/ok\",\n    \"relative/x\"]\n}\n").unwrap();
    let out = output(std::process::Command::new(bin()).arg("check-manifests").arg(&d));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:3:5: read[1]: pattern \"relative/x\" is not absolute",
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{}: ok (server good)", good.display())), "{err}");
    let out = output(
        std::process::Command::new(bin())
            .arg("check-manifests")
            .arg(shipped_manifests()),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("warning"),
        "the shipped manifests load without warnings:\n{err}"
    );
    // A tool grant wider than the server's loads, with a warning naming it.
    let wide = d.join("wide.json");
    std::fs::write(&wide, r#"{"read": ["/data"], "tools": {"t": {"read": ["/etc"]}}}"#).unwrap();
    let out = output(std::process::Command::new(bin()).arg("check-manifests").arg(&wide));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{}: warning: tools.t.read[0]: \"/etc\" is not within the server-wide `read`/`write`",
            wide.display()
        )),
        "{err}"
    );
}

#[test]
fn shipped_manifests_validate_against_the_schema() {
    let check = r#"
import glob, json, sys
import jsonschema
schema = json.load(open(sys.argv[1] + "/manifest.schema.json"))
jsonschema.Draft202012Validator.check_schema(schema)
files = [f for f in sorted(glob.glob(sys.argv[1] + "/*.json")) if not f.endswith(".schema.json")]
for f in files:
    jsonschema.validate(json.load(open(f)), schema)
jsonschema.validate({"tools": {"t": {"write": [], "network": {"outbound": {"allow_host": ["x.com"]}}}},
                     "pins": {"t": "sha256:" + "a" * 64}}, schema)
bads = [{"read": ["relative"], "mode": "strict"}, {"tools": {"t": {"reads": []}}},
        {"tools": {"t": {"read": ["relative"]}}}, {"pins": {"t": "sha256:abc"}}]
for bad in bads:
    try:
        jsonschema.validate(bad, schema)
        sys.exit(f"a bad manifest validated: {bad}")
    except jsonschema.ValidationError:
        pass
print(len(files))
"#;
    let out = output(
        std::process::Command::new(python())
            .arg("-c")
            .arg(check)
            .arg(shipped_manifests()),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6");
}

/// Whether the agent reports more than process lifecycle (file and network
/// events come with issue 3's probes). Tests of file and network rules need them.
fn reports_file_and_network(ev: &[Value]) -> bool {
    ev.iter().any(|e| {
        !matches!(
            e["kind"].as_str(),
            Some("exec" | "fork" | "exit" | "watch" | "alert" | "loss")
        )
    })
}

#[test]
fn a_tool_reading_an_ssh_key_of_a_fake_home_raises_cred_ssh() {
    let (agent, _) = evil_agent("pol-ssh");
    let home = scratch_dir("pol-ssh-home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n").unwrap();
    let (report, ev) = session(
        &agent,
        "evil",
        evil(&[("read_ssh_key", json!({"home": home.to_string_lossy()}))]).env("HOME", home.to_str().unwrap()),
    );
    assert!(
        report["calls"][0]["text"].as_str().unwrap_or("").starts_with("read "),
        "{report}"
    );
    if !reports_file_and_network(&ev) {
        eprintln!("skipped: this agent reports no file events (kernel file probes not built in)");
        return;
    }
    let a = alerts(&ev, Some("evil"));
    let key = home.join(".ssh/id_rsa");
    let cred: Vec<&&Value> = a.iter().filter(|a| a["rule"] == "cred.ssh").collect();
    assert_eq!(cred.len(), 1, "{}", dump(&ev));
    assert_eq!(cred[0]["evidence"]["path"], key.to_string_lossy().as_ref());
    assert_eq!(cred[0]["severity"], "high");
    assert_eq!(cred[0]["mitre"]["id"], "T1552.004");
    assert!(agent.stop().success());
}

#[test]
fn a_tool_connecting_to_an_undeclared_loopback_port_raises_net_connect_undeclared() {
    let (agent, _) = evil_agent("pol-connect");
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut line = String::new();
        let _ = BufReader::new(&mut s).read_line(&mut line);
        line
    });
    let (_, ev) = session(&agent, "evil", evil(&[("connect_port", json!({"port": port}))]));
    assert_eq!(sink.join().unwrap(), "exfiltrated\n");
    if !reports_file_and_network(&ev) {
        eprintln!("skipped: this agent reports no network events (kernel network probes not built in)");
        return;
    }
    let a = alerts(&ev, Some("evil"));
    let net: Vec<&&Value> = a.iter().filter(|a| a["rule"] == "net.connect_undeclared").collect();
    assert_eq!(net.len(), 1, "{}", dump(&ev));
    assert_eq!(net[0]["evidence"]["address"], "127.0.0.1");
    assert_eq!(net[0]["evidence"]["port"], port);
    assert!(agent.stop().success());
}

/// A copy of a shipped manifest with `edit` applied, alone in a scratch directory.
fn narrowed(test: &str, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let d = manifests_copy(test, &[name]);
    let f = d.join(format!("{name}.json"));
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&f, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    d
}

#[test]
fn filesystem_session_with_write_narrowed_raises_exactly_the_writes() {
    let d = narrowed("pol-fs-narrow", "filesystem", |m| m["write"] = json!([]));
    let agent = agent_with("pol-fs-narrow", &d, &[]);
    let root = scratch_dir("pol-fs-narrow-root");
    std::fs::write(root.join("notes.txt"), "hello\n").unwrap();
    let r = root.to_string_lossy().into_owned();
    let node = node_server("server-filesystem");
    let s = McpSession::new(&["node", node.to_str().unwrap(), &r])
        .call("read_text_file", json!({"path": format!("{r}/notes.txt")}))
        .call(
            "write_file",
            json!({"path": format!("{r}/out.txt"), "content": "written"}),
        )
        .call("create_directory", json!({"path": format!("{r}/sub")}))
        .call("list_directory", json!({"path": r}));
    let (_, ev) = session(&agent, "filesystem", s);
    if !reports_file_and_network(&ev) {
        eprintln!("skipped: this agent reports no file events (kernel file probes not built in)");
        return;
    }
    let a = alerts(&ev, Some("filesystem"));
    assert_eq!(rules_of(&a), ["file.write_undeclared"; 2], "{}", dump(&ev));
    let mut paths: Vec<String> = a
        .iter()
        .map(|a| a["evidence"]["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    assert_eq!(paths, [format!("{r}/out.txt"), format!("{r}/sub")], "{}", dump(&ev));
    assert_eq!(a[0]["declared"]["write"], json!([]));
    assert!(agent.stop().success());
}

#[test]
fn fetch_session_with_port_narrowed_raises_exactly_one_connect_alert() {
    let d = narrowed("pol-fetch-narrow", "fetch", |m| {
        m["network"]["outbound"]["allow_port"] = json!([443])
    });
    let agent = agent_with("pol-fetch-narrow", &d, &[]);
    let (addr, web) = web_server();
    let s = McpSession::new(&[&py(), "-m", "mcp_server_fetch", "--allow-private-ips"])
        .call("fetch", json!({"url": format!("http://{addr}/page")}))
        .call("fetch", json!({"url": format!("http://{addr}/stop"), "raw": true}));
    let (_, ev) = session(&agent, "fetch", s);
    web.join().unwrap();
    if !reports_file_and_network(&ev) {
        eprintln!("skipped: this agent reports no network events (kernel network probes not built in)");
        return;
    }
    let a = alerts(&ev, Some("fetch"));
    // Several connections to the same address and port: one alert, the rest counted.
    assert_eq!(rules_of(&a), ["net.connect_undeclared"], "{}", dump(&ev));
    assert_eq!(a[0]["evidence"]["address"], addr.as_str());
    assert_eq!(a[0]["evidence"]["port"], 80);
    assert_eq!(a[0]["declared"]["network"]["outbound"]["allow_port"], json!([443]));
    assert!(agent.stop().success());
}

#[test]
fn filesystem_session_with_one_tool_narrowed_raises_exactly_that_tools_write() {
    // The shipped manifest holds the reading tools to `write: []`; hold
    // write_file there too: its write is the only one outside a grant.
    let d = narrowed("pol-fs-tool", "filesystem", |m| {
        m["tools"]["write_file"] = json!({"write": []})
    });
    let agent = agent_with("pol-fs-tool", &d, &[]);
    let root = scratch_dir("pol-fs-tool-root");
    std::fs::write(root.join("notes.txt"), "hello\n").unwrap();
    let r = root.to_string_lossy().into_owned();
    let node = node_server("server-filesystem");
    let s = McpSession::new(&["node", node.to_str().unwrap(), &r])
        .call("read_text_file", json!({"path": format!("{r}/notes.txt")}))
        .call(
            "write_file",
            json!({"path": format!("{r}/out.txt"), "content": "written"}),
        )
        .call("create_directory", json!({"path": format!("{r}/sub")}))
        .call("list_directory", json!({"path": r}));
    let (_, ev) = session(&agent, "filesystem", s);
    let a = alerts(&ev, Some("filesystem"));
    assert_eq!(rules_of(&a), ["tool.write_outside_grant"], "{}", dump(&ev));
    assert_eq!(a[0]["tool"], "write_file");
    assert!(a[0]["call_id"].is_string(), "{}", a[0]);
    assert_eq!(a[0]["evidence"]["path"], format!("{r}/out.txt").as_str());
    assert_eq!(a[0]["declared"]["write"], json!([]));
    assert_eq!(a[0]["declared"]["tool"], "write_file");
    assert!(agent.stop().success());
}
