//! MCP protocol awareness end to end: the real agent captures the stdio of
//! real servers (npm's reference server, and servers written here on the
//! official Python SDK) driven by the official Python SDK client.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use mcpwatch_tests::*;
use serde_json::{Value, json};

fn python() -> PathBuf {
    testenv().join("venv/bin/python")
}

fn mcp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp")
}

fn server_script(name: &str) -> String {
    mcp_dir().join("servers").join(name).to_string_lossy().into_owned()
}

fn everything() -> String {
    testenv()
        .join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .to_string_lossy()
        .into_owned()
}

/// An agent that audits tool calls and keeps its pins in its own directory.
fn agent(name: &str) -> Agent {
    let state = std::env::temp_dir().join(format!("mcpwatch-it-{name}-{}-state", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let state = state.to_string_lossy().into_owned();
    Agent::start(name, &["--audit-tool-calls", "--state-dir", &state])
}

fn state_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mcpwatch-it-{name}-{}-state", std::process::id()))
}

/// Runs the SDK client with `plan` against `cmd` wrapped as `server`; returns its step lines.
fn client(agent: &Agent, server: &str, plan: Value, cmd: &[&str]) -> Vec<Value> {
    let socket = agent.socket.to_string_lossy().into_owned();
    let bin = bin().to_string_lossy().into_owned();
    let mut args = vec![
        bin.as_str(),
        "exec",
        "--server",
        server,
        "--require-agent",
        "--socket",
        &socket,
        "--",
    ];
    args.extend(cmd);
    client_of(agent, plan, &args)
}

/// Runs the SDK client with `plan` against `args` as given (no wrapper).
fn client_of(agent: &Agent, plan: Value, args: &[&str]) -> Vec<Value> {
    let out = output(
        Command::new(python())
            .env_remove("LD_LIBRARY_PATH")
            .arg(mcp_dir().join("client.py"))
            .arg(plan.to_string())
            .arg("--")
            .args(args)
            .current_dir(mcp_dir().join("servers")),
    );
    assert!(
        out.status.success(),
        "client failed: {}\n{}\nagent log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("client line"))
        .collect()
}

fn of_server<'a>(events: &'a [Value], kind: &str, server: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["server"] == server)
        .collect()
}

fn alerts<'a>(events: &'a [Value], rule: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["rule"] == rule)
        .collect()
}

/// (tool, call_id) of the server's `tool_call` lines, in order.
fn audited_calls(events: &[Value], server: &str) -> Vec<(String, String)> {
    of_server(events, "tool_call", server)
        .iter()
        .map(|e| {
            (
                e["tool"].as_str().unwrap().to_owned(),
                e["call_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (tool, JSON-RPC id) of the client's calls, in order.
fn call_ids(steps: &[Value]) -> Vec<(String, String)> {
    steps
        .iter()
        .filter(|s| s["step"] == "call")
        .map(|s| (s["tool"].as_str().unwrap().to_owned(), s["id"].to_string()))
        .collect()
}

#[test]
fn calls_to_the_npm_reference_server_are_attributed_with_their_ids() {
    let agent = agent("mcp-attr");
    let steps = client(
        &agent,
        "everything",
        json!([["list"], ["call", "echo", {"message": "hi"}], ["call", "get-sum", {"a": 2, "b": 3}],
               ["call", "echo", {"message": "again"}]]),
        &["node", &everything(), "stdio"],
    );
    let sent = call_ids(&steps);
    assert_eq!(sent.len(), 3);
    let ev = agent.wait_events("three tool_call lines", |ev| {
        of_server(ev, "tool_call", "everything").len() >= 3
    });
    assert_eq!(audited_calls(&ev, "everything"), sent, "{}", dump(&ev));
    let calls = of_server(&ev, "tool_call", "everything");
    assert_eq!(calls[1]["arguments"], json!({"a": 2, "b": 3}));
    assert!(
        calls
            .iter()
            .all(|c| c["error"] == false && c["duration_ns"].as_u64().is_some())
    );
    let tools = of_server(&ev, "mcp_tools", "everything");
    assert_eq!(tools.len(), 1, "{}", dump(&ev));
    let names: Vec<&str> = tools[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"echo") && names.contains(&"get-sum"), "{names:?}");
    assert_eq!(of_server(&ev, "mcp_pinned", "everything").len(), 1);
    assert!(of_server(&ev, "mcp_garbage", "everything").is_empty(), "{}", dump(&ev));
}

fn time_server() -> String {
    testenv()
        .join("venv/bin/mcp-server-time")
        .to_string_lossy()
        .into_owned()
}

/// The PyPI reference server on the SDK's own stdio transport, which moves
/// the wire off fds 0 and 1 onto private duplicates (>= 3) and points fd 1 at
/// stderr: the capture follows the pipes, not the descriptor numbers, and
/// what the server logs is not taken for its conversation.
#[test]
fn calls_to_a_pypi_reference_server_are_attributed_with_their_ids() {
    let agent = agent("mcp-pypi");
    let py = python().to_string_lossy().into_owned();
    let server = time_server();
    let steps = client(
        &agent,
        "time",
        json!([["list"], ["call", "get_current_time", {"timezone": "UTC"}],
               ["call", "convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"}]]),
        &[&py, &server, "--local-timezone", "UTC"],
    );
    let sent = call_ids(&steps);
    let ev = agent.wait_events("two tool_call lines", |ev| {
        of_server(ev, "tool_call", "time").len() >= 2
    });
    assert_eq!(audited_calls(&ev, "time"), sent, "{}", dump(&ev));
    assert_eq!(of_server(&ev, "mcp_tools", "time").len(), 1);
    assert!(of_server(&ev, "mcp_garbage", "time").is_empty(), "{}", dump(&ev));
}

/// A discovery rule decides at exec, in userspace, a moment after the kernel
/// saw the exec: the channels are taken in the kernel at the exec itself, so
/// a server that moves its wire before the decision is still heard.
#[test]
fn a_server_found_by_a_rule_is_heard_on_its_moved_wire() {
    let state = state_dir("mcp-rule");
    let _ = std::fs::remove_dir_all(&state);
    let state = state.to_string_lossy().into_owned();
    let agent = Agent::start(
        "mcp-rule",
        // The server's argv, not the client's (which carries it after `--`).
        &[
            "--audit-tool-calls",
            "--state-dir",
            &state,
            "--watch",
            r"time-ruled=^\S+ \S+/mcp-server-time( |$)",
        ],
    );
    let py = python().to_string_lossy().into_owned();
    let server = time_server();
    let steps = client_of(
        &agent,
        json!([["list"], ["call", "get_current_time", {"timezone": "UTC"}]]),
        &[&py, &server, "--local-timezone", "UTC"],
    );
    let sent = call_ids(&steps);
    let ev = agent.wait_events("a tool_call line", |ev| {
        !of_server(ev, "tool_call", "time-ruled").is_empty()
    });
    assert_eq!(audited_calls(&ev, "time-ruled"), sent, "{}", dump(&ev));
    let watch = of_server(&ev, "watch", "time-ruled");
    assert_eq!(watch[0]["reason"], "rule", "{}", dump(&ev));
    let pid = watch[0]["pid"].as_u64().unwrap();
    let log = agent.log();
    assert!(
        log.contains(&format!("stdio of pid {pid}: channels taken at exec")),
        "{log}"
    );
}

#[test]
fn a_rug_pull_after_the_third_call_raises_the_alert_with_a_diff() {
    let agent = agent("mcp-rug");
    let py = python().to_string_lossy().into_owned();
    let add = json!(["call", "add", {"a": 1, "b": 2}]);
    let steps = client(
        &agent,
        "rug",
        json!([["list"], add, add, add, add, ["list"]]),
        &[&py, &server_script("rug_pull.py")],
    );
    assert!(steps[5]["tools"][0]["description"].as_str().unwrap().contains("id_rsa"));
    let ev = agent.wait_events("rug pull alert", |ev| !alerts(ev, "mcp.rug_pull.changed").is_empty());
    let a = alerts(&ev, "mcp.rug_pull.changed");
    assert_eq!(a.len(), 1, "{}", dump(&ev));
    assert_eq!(a[0]["server"], "rug");
    assert_eq!(a[0]["tool"], "add");
    assert_eq!(a[0]["evidence"]["old_description"], "Adds two numbers.");
    assert_eq!(a[0]["evidence"]["after_list_changed"], true);
    let diff = a[0]["evidence"]["diff"].as_str().unwrap();
    assert!(diff.starts_with("Adds two numbers.{+ Before using this tool"), "{diff}");
    assert_eq!(of_server(&ev, "mcp_list_changed", "rug").len(), 1, "{}", dump(&ev));
    // The changed description is poisoned too.
    assert!(!alerts(&ev, "mcp.poison.credential_reference").is_empty());
    assert!(state_dir("mcp-rug").join("pins/rug.json").exists());

    // Every call ran /bin/true: its exec is attributed to the call that ran it.
    let sent = call_ids(&steps);
    let ev = agent.wait_events("four tool_call lines", |ev| {
        of_server(ev, "tool_call", "rug").len() >= 4
    });
    let trues: Vec<&Value> = of_server(&ev, "exec", "rug")
        .into_iter()
        .filter(|e| e["argv"][0] == "/bin/true")
        .collect();
    assert_eq!(trues.len(), 4, "{}", dump(&ev));
    for (t, (tool, id)) in trues.iter().zip(&sent) {
        assert_eq!(
            (t["tool"].as_str().unwrap(), t["call_id"].as_str().unwrap()),
            (tool.as_str(), id.as_str())
        );
    }
    for c in of_server(&ev, "tool_call", "rug") {
        assert!(c["activity"]["execs"].as_u64() >= Some(1), "{c}");
    }
}

#[test]
fn a_poisoned_description_raises_the_poisoning_rules() {
    let agent = agent("mcp-poison");
    let py = python().to_string_lossy().into_owned();
    let note = agent.dir.join("note.txt");
    std::fs::write(&note, "remember the milk\n").unwrap();
    let note = note.to_string_lossy().into_owned();
    let steps = client(
        &agent,
        "poisoned",
        json!([["list"], ["call", "add", {"a": 1, "b": 2}], ["call", "read_note", {"path": note}]]),
        &[&py, &server_script("poisoned.py")],
    );
    let want = [
        "mcp.poison.hidden_instruction",
        "mcp.poison.invisible_unicode",
        "mcp.poison.model_directive",
        "mcp.poison.credential_reference",
    ];
    let ev = agent.wait_events("poisoning alerts", |ev| want.iter().all(|r| !alerts(ev, r).is_empty()));
    for rule in want {
        // Those about the description (the result's carry a call_id).
        for a in alerts(&ev, rule).into_iter().filter(|a| a.get("call_id").is_none()) {
            assert_eq!(
                (a["server"].as_str(), a["tool"].as_str()),
                (Some("poisoned"), Some("add")),
                "{a}"
            );
            let span = &a["evidence"]["finding"]["span"];
            assert!(span["end"].as_u64() > span["start"].as_u64(), "{a}");
        }
    }
    let hidden = alerts(&ev, "mcp.poison.hidden_instruction");
    assert!(
        hidden[0]["evidence"]["finding"]["excerpt"]
            .as_str()
            .unwrap()
            .contains("<IMPORTANT>")
    );
    let spelled = alerts(&ev, "mcp.poison.invisible_unicode").into_iter().any(|a| {
        a["evidence"]["finding"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("send the result to attacker.example"))
    });
    assert!(spelled, "tag characters decoded: {}", dump(&ev));

    // The note's open is attributed to the call that read it, and the
    // injection in its result names the call.
    let id = steps[2]["id"].to_string();
    let ev = agent.wait_events("the result alert", |ev| {
        alerts(ev, "mcp.poison.hidden_instruction")
            .iter()
            .any(|a| a["call_id"] == id.as_str())
    });
    let open = of_server(&ev, "file", "poisoned")
        .into_iter()
        .find(|e| e["path"] == note.as_str())
        .unwrap_or_else(|| panic!("open of the note: {}", dump(&ev)));
    assert_eq!(
        (open["tool"].as_str(), open["call_id"].as_str()),
        (Some("read_note"), Some(id.as_str()))
    );
    let injected = alerts(&ev, "mcp.poison.hidden_instruction")
        .into_iter()
        .find(|a| a["call_id"] == id.as_str())
        .unwrap();
    assert_eq!(injected["tool"], "read_note");
    assert_eq!(injected["evidence"]["finding"]["field"], "result.content[0].text");
}

#[test]
fn a_200_kb_tools_list_is_reassembled_whole() {
    let agent = agent("mcp-big");
    let py = python().to_string_lossy().into_owned();
    let steps = client(&agent, "big", json!([["list"]]), &[&py, &server_script("big_list.py")]);
    assert_eq!(steps[0]["tools"].as_array().unwrap().len(), 160);
    let ev = agent.wait_events("the listing", |ev| !of_server(ev, "mcp_tools", "big").is_empty());
    let tools = of_server(&ev, "mcp_tools", "big");
    assert_eq!(tools[0]["tools"].as_array().unwrap().len(), 160, "{}", dump(&ev));
    assert!(of_server(&ev, "mcp_cut", "big").is_empty(), "{}", dump(&ev));
}

#[test]
fn random_bytes_on_stdout_neither_crash_nor_stall_the_agent() {
    let agent = agent("mcp-noise");
    let py = python().to_string_lossy().into_owned();
    let noise = server_script("noise.py");
    let out = output(
        Command::new(bin())
            .args(["exec", "--server", "noise", "--require-agent", "--socket"])
            .arg(&agent.socket)
            .args(["--", &py, &noise, "4194304"])
            .stdout(std::process::Stdio::piped())
            .env_remove("LD_LIBRARY_PATH"),
    );
    assert!(out.status.success());
    assert!(out.stdout.len() > 4 << 20);
    let ev = agent.wait_events("garbage report and the final message", |ev| {
        !of_server(ev, "mcp_garbage", "noise").is_empty() && !of_server(ev, "mcp_list_changed", "noise").is_empty()
    });
    let garbage: u64 = of_server(&ev, "mcp_garbage", "noise")
        .iter()
        .map(|g| g["garbage"].as_u64().unwrap())
        .sum();
    assert!(garbage > 1000, "{garbage}");
    // Still alive and still understanding other servers.
    agent.status();
    let steps = client(
        &agent,
        "after",
        json!([["call", "echo", {"message": "x"}]]),
        &["node", &everything(), "stdio"],
    );
    let id = steps[0]["id"].to_string();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ev = agent.events();
        if of_server(&ev, "tool_call", "after")
            .iter()
            .any(|c| c["call_id"] == id.as_str())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no tool_call after the noise:\n{}",
            dump(&ev)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the stdio capture sustains on this machine: a watched process writes
/// 1 KiB JSON-RPC lines at increasing rates; every line that reaches the agent
/// whole is one `mcp_list_changed` event. Prints a table; run it explicitly:
/// `cargo test -p mcpwatch-tests --test mcp capture_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check: run explicitly"]
fn capture_cost() {
    let agent = agent("mcp-cost");
    let py = python().to_string_lossy().into_owned();
    let flood = server_script("flood.py");
    println!("rate (MB/s asked) | lines written | lines seen whole | achieved MB/s | loss");
    for (i, rate_mb) in [16u64, 48, 64, 96, 128, 0].into_iter().enumerate() {
        let server = format!("flood{i}");
        let total: u64 = if rate_mb == 0 { 128 << 20 } else { rate_mb << 21 }; // 2 s at the rate
        let rate = (rate_mb << 20).to_string();
        let out = output(
            Command::new(bin())
                .args(["exec", "--server", &server, "--require-agent", "--socket"])
                .arg(&agent.socket)
                .args(["--", &py, &flood, &rate, &total.to_string()])
                .stdout(std::process::Stdio::piped())
                .env_remove("LD_LIBRARY_PATH"),
        );
        assert!(out.status.success());
        let stats = String::from_utf8_lossy(&out.stderr);
        let mut it = stats.split_whitespace();
        let written: u64 = it.next().and_then(|s| s.parse().ok()).expect("lines written");
        let secs: f64 = it.next().and_then(|s| s.parse().ok()).expect("elapsed");
        // Let the agent drain.
        std::thread::sleep(Duration::from_secs(3));
        let ev = agent.events();
        let seen = of_server(&ev, "mcp_list_changed", &server).len() as u64;
        let lost_lines: u64 = ev
            .iter()
            .filter(|e| e["kind"] == "loss" && e["server"] == server.as_str())
            .map(|e| e["lost"].as_u64().unwrap_or(0))
            .sum();
        println!(
            "{:>6} | {written} | {seen} | {:.1} | {} records lost in the kernel",
            if rate_mb == 0 {
                "max".to_string()
            } else {
                rate_mb.to_string()
            },
            (written as f64 * 1024.0) / secs / (1 << 20) as f64,
            lost_lines
        );
    }
}

/// An agent judging against the manifests in `manifests` (no user host configurations).
fn agent_with_manifests(name: &str, manifests: &Path) -> Agent {
    let state = state_dir(name);
    let _ = std::fs::remove_dir_all(&state);
    let (state, m) = (
        state.to_string_lossy().into_owned(),
        manifests.to_string_lossy().into_owned(),
    );
    Agent::start(
        name,
        &[
            "--audit-tool-calls",
            "--state-dir",
            &state,
            "--manifests",
            &m,
            "--no-user-host-configs",
        ],
    )
}

fn alerts_of<'a>(events: &'a [Value], server: &str) -> Vec<&'a Value> {
    of_server(events, "alert", server)
}

/// Waits until the agent logged `what` `n` times (a reload...).
fn wait_log(agent: &Agent, what: &str, n: usize) {
    wait_for(
        what,
        PATIENCE,
        || (agent.log().matches(what).count() >= n).then_some(()),
        || agent.log(),
    );
}

#[test]
fn a_tool_call_outside_its_narrowed_grant_is_alerted_with_the_tool_and_call() {
    let data = scratch_dir("mcp-narrow-data");
    std::fs::create_dir_all(data.join("public")).unwrap();
    std::fs::write(data.join("public/readme.txt"), "public\n").unwrap();
    std::fs::write(data.join("secret.txt"), "secret\n").unwrap();
    let d = scratch_dir("mcp-narrow-manifests");
    let dir = data.to_string_lossy().into_owned();
    let manifest = json!({
        "name": "scoped",
        "read": [dir],
        "tools": { "peek": { "read": [format!("{dir}/public")] } }
    });
    std::fs::write(d.join("scoped.json"), manifest.to_string()).unwrap();
    let agent = agent_with_manifests("mcp-narrow", &d);
    let py = python().to_string_lossy().into_owned();
    let secret = format!("{dir}/secret.txt");
    let steps = client(
        &agent,
        "scoped",
        json!([["list"],
               ["call", "read_file", {"path": secret}],
               ["call", "peek", {"path": format!("{dir}/public/readme.txt")}],
               ["call", "peek", {"path": secret}],
               ["call", "read_file", {"path": secret}]]),
        &[&py, &server_script("scoped.py")],
    );
    let ids = call_ids(&steps);
    assert_eq!(steps[4]["text"], json!(["secret\n"]), "{steps:?}");
    let ev = agent.wait_events("the server's exit", |ev| server_done(ev, "scoped"));
    // Every open of the secret, each attributed to the call that made it.
    let opens: Vec<(&str, &str)> = of_server(&ev, "file", "scoped")
        .into_iter()
        .filter(|e| e["path"] == secret.as_str())
        .map(|e| (e["tool"].as_str().unwrap_or(""), e["call_id"].as_str().unwrap_or("")))
        .collect();
    let want: Vec<(&str, &str)> = [&ids[0], &ids[2], &ids[3]]
        .iter()
        .map(|(t, i)| (t.as_str(), i.as_str()))
        .collect();
    assert_eq!(opens, want, "{}", dump(&ev));
    // Only peek's read of the secret is outside a grant: read_file has the server's.
    let a = alerts_of(&ev, "scoped");
    assert_eq!(a.len(), 1, "{}", dump(&ev));
    let a = a[0];
    assert_eq!(a["rule"], "tool.read_outside_grant");
    assert_eq!(
        (a["tool"].as_str(), a["call_id"].as_str()),
        (Some("peek"), Some(ids[2].1.as_str()))
    );
    assert_eq!(
        a["summary"],
        format!("scoped read outside tool `peek`'s grant: {secret}").as_str()
    );
    assert_eq!(a["evidence"]["path"], secret.as_str());
    assert_eq!(
        a["declared"],
        json!({"read": [format!("{dir}/public")], "write": [], "tool": "peek"})
    );
    assert_eq!(a["manifest"], d.join("scoped.json").to_string_lossy().as_ref());
    assert!(agent.stop().success());
}

const WRONG_PIN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn shipped_pins_that_do_not_match_raise_the_rug_pull_at_first_sight() {
    let d = scratch_dir("mcp-pins-bad-manifests");
    std::fs::write(
        d.join("calc.json"),
        json!({"name": "calc", "pins": {"add": WRONG_PIN}}).to_string(),
    )
    .unwrap();
    let agent = agent_with_manifests("mcp-pins-bad", &d);
    let py = python().to_string_lossy().into_owned();
    client(&agent, "calc", json!([["list"]]), &[&py, &server_script("rug_pull.py")]);
    let ev = agent.wait_events("the server's exit", |ev| server_done(ev, "calc"));
    let a = alerts_of(&ev, "calc");
    assert_eq!(a.len(), 1, "{}", dump(&ev));
    assert_eq!(
        (a[0]["rule"].as_str(), a[0]["tool"].as_str()),
        (Some("mcp.rug_pull.changed"), Some("add"))
    );
    assert_eq!(a[0]["evidence"]["baseline"], "manifest");
    assert_eq!(a[0]["evidence"]["old_hash"], Value::Null);
    assert_eq!(
        a[0]["summary"],
        "tool add of server calc does not match the pin its manifest ships"
    );
    assert_eq!(a[0]["manifest"], d.join("calc.json").to_string_lossy().as_ref());
    // No trust on first use: nothing pinned, no pin file.
    assert!(of_server(&ev, "mcp_pinned", "calc").is_empty(), "{}", dump(&ev));
    assert!(!state_dir("mcp-pins-bad").join("pins/calc.json").exists());
    assert!(agent.stop().success());
}

#[test]
fn pins_shown_by_the_cli_and_shipped_raise_nothing_and_a_reload_rechecks_a_live_server() {
    let d = scratch_dir("mcp-pins-ship-manifests");
    let f = d.join("calc.json");
    std::fs::write(&f, json!({"name": "calc"}).to_string()).unwrap();
    let agent = agent_with_manifests("mcp-pins-ship", &d);
    let py = python().to_string_lossy().into_owned();
    let rug = server_script("rug_pull.py");
    let tools_lines = |ev: &[Value]| of_server(ev, "mcp_tools", "calc").len();

    // Trust on first use, then the pins as a manifest ships them.
    client(&agent, "calc", json!([["list"]]), &[&py, &rug]);
    let ev = agent.wait_events("the first pinning", |ev| {
        !of_server(ev, "mcp_pinned", "calc").is_empty()
    });
    assert!(alerts_of(&ev, "calc").is_empty(), "{}", dump(&ev));
    let state = state_dir("mcp-pins-ship");
    let out = output(
        Command::new(bin())
            .args(["pins", "show", "--server", "calc", "--state-dir"])
            .arg(&state),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("pins show prints JSON");
    let hash = shown["pins"]["add"].as_str().expect("the add tool's pin").to_owned();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{shown}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("add: Adds two numbers."),
        "descriptions for review on stderr"
    );
    let mut manifest = json!({"name": "calc"});
    manifest["pins"] = shown["pins"].clone();
    std::fs::write(&f, manifest.to_string()).unwrap();
    // The manifest, not the file, is the baseline now.
    std::fs::remove_file(state.join("pins/calc.json")).unwrap();
    wait_log(&agent, "reloaded", 1);

    client(&agent, "calc", json!([["list"]]), &[&py, &rug]);
    let ev = agent.wait_events("the second listing", |ev| tools_lines(ev) >= 2);
    assert!(alerts_of(&ev, "calc").is_empty(), "{}", dump(&ev));
    assert_eq!(of_server(&ev, "mcp_pinned", "calc").len(), 1, "nothing pinned again");
    assert!(!state.join("pins/calc.json").exists());

    // Pins changed by a reload while a server is up: its listing is checked at once.
    std::thread::scope(|s| {
        let session = s.spawn(|| client(&agent, "calc", json!([["list"], ["sleep", 8]]), &[&py, &rug]));
        let ev = agent.wait_events("the third listing", |ev| tools_lines(ev) >= 3);
        let listing_pid = of_server(&ev, "mcp_tools", "calc")[2]["pid"].clone();
        manifest["pins"]["add"] = json!(WRONG_PIN);
        std::fs::write(&f, manifest.to_string()).unwrap();
        let ev = agent.wait_events("the rug pull after the reload", |ev| !alerts_of(ev, "calc").is_empty());
        let a = alerts_of(&ev, "calc");
        assert_eq!(a.len(), 1, "{}", dump(&ev));
        assert_eq!(a[0]["rule"], "mcp.rug_pull.changed");
        assert_eq!(a[0]["evidence"]["baseline"], "manifest");
        assert_eq!(a[0]["pid"], listing_pid, "the live server");
        assert!(!server_done(&ev, "calc"), "alerted while the server runs");
        session.join().unwrap();
    });
    assert!(agent.stop().success());
}
