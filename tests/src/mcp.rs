//! Helpers of the MCP tests (tests/tests/mcp*.rs): agents that audit tool
//! calls, the official SDK client driving a (wrapped) server, the lines and
//! alerts of a server.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::*;

pub fn mcp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp")
}

pub fn server_script(name: &str) -> String {
    mcp_dir().join("servers").join(name).to_string_lossy().into_owned()
}

pub fn everything() -> String {
    testenv()
        .join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .to_string_lossy()
        .into_owned()
}

/// An agent that audits tool calls and keeps its pins in its own directory.
pub fn agent(name: &str) -> Agent {
    let state = std::env::temp_dir().join(format!("mcpwatch-it-{name}-{}-state", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let state = state.to_string_lossy().into_owned();
    Agent::start(name, &["--audit-tool-calls", "--state-dir", &state])
}

pub fn state_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mcpwatch-it-{name}-{}-state", std::process::id()))
}

/// Runs the SDK client with `plan` against `cmd` wrapped as `server`; returns its step lines.
pub fn client(agent: &Agent, server: &str, plan: Value, cmd: &[&str]) -> Vec<Value> {
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
pub fn client_of(agent: &Agent, plan: Value, args: &[&str]) -> Vec<Value> {
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

pub fn of_server<'a>(events: &'a [Value], kind: &str, server: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["server"] == server)
        .collect()
}

pub fn alerts_by_rule<'a>(events: &'a [Value], rule: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == "alert" && e["rule"] == rule)
        .collect()
}

/// (tool, call_id) of the server's `tool_call` lines, in order.
pub fn audited_calls(events: &[Value], server: &str) -> Vec<(String, String)> {
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
pub fn call_ids(steps: &[Value]) -> Vec<(String, String)> {
    steps
        .iter()
        .filter(|s| s["step"] == "call")
        .map(|s| (s["tool"].as_str().unwrap().to_owned(), s["id"].to_string()))
        .collect()
}

pub fn time_server() -> String {
    testenv()
        .join("venv/bin/mcp-server-time")
        .to_string_lossy()
        .into_owned()
}

/// An agent judging against the manifests in `manifests` (no user host configurations).
pub fn agent_with_manifests(name: &str, manifests: &Path) -> Agent {
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

pub fn alerts_of<'a>(events: &'a [Value], server: &str) -> Vec<&'a Value> {
    of_server(events, "alert", server)
}

/// Waits until the agent logged `what` `n` times (a reload...).
pub fn wait_log(agent: &Agent, what: &str, n: usize) {
    wait_for(
        what,
        PATIENCE,
        || (agent.log().matches(what).count() >= n).then_some(()),
        || agent.log(),
    );
}

/// `mcpwatch exec --gate --server SERVER --require-agent` in front of `cmd`.
pub fn gate_cmd(agent: &Agent, server: &str, cmd: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        bin().to_string_lossy().into_owned(),
        "exec".into(),
        "--gate".into(),
        "--server".into(),
        server.into(),
        "--require-agent".into(),
        "--socket".into(),
        agent.socket.to_string_lossy().into_owned(),
        "--".into(),
    ];
    args.extend(cmd.iter().map(|s| s.to_string()));
    args
}
