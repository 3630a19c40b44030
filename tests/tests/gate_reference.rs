//! The gate is transparent to the reference servers: the official SDK
//! client's session (tools listed, calls and their results) is the same
//! through the gate as straight to the server, for filesystem, everything,
//! memory, time and git (their shipped manifests with `"gate": {"unlisted":
//! "allow"}`, so that every tool passes and only the relay is under test).

use mcpwatch_tests::{mcp::gate_cmd, policy::*, *};
use serde_json::{Value, json};

fn gated_manifests() -> std::path::PathBuf {
    let names = ["filesystem", "everything", "memory", "time", "git"];
    let d = manifests_copy("gate-ref", &names);
    for n in names {
        let f = d.join(format!("{n}.json"));
        let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        m["gate"] = json!({"unlisted": "allow"});
        std::fs::write(&f, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    }
    d
}

/// The session straight to the server, then through the gate: the same report.
fn same_through_the_gate(agent: &Agent, server: &str, s: McpSession) -> Value {
    let direct = s.run();
    let cmd: Vec<&str> = s.server_cmd.iter().map(String::as_str).collect();
    let gated = McpSession {
        server_cmd: gate_cmd(agent, server, &cmd),
        calls: s.calls.clone(),
        env: s.env.clone(),
        cwd: s.cwd.clone(),
        allow_errors: s.allow_errors,
        roots: s.roots.clone(),
    }
    .run();
    assert_eq!(gated, direct, "{server}: through the gate / straight");
    assert!(!direct["tools"].as_array().unwrap().is_empty(), "{direct}");
    direct
}

#[test]
fn reference_sessions_are_the_same_through_the_gate() {
    let agent = agent_with("gate-ref", &gated_manifests(), &[]);
    let root = scratch_dir("gate-ref-root");
    std::fs::write(root.join("notes.txt"), "hello\n").unwrap();
    let r = root.to_string_lossy().into_owned();
    let fs = node_server("server-filesystem");
    same_through_the_gate(
        &agent,
        "filesystem",
        McpSession::new(&["node", fs.to_str().unwrap(), &r])
            .call("list_allowed_directories", json!({}))
            .call("read_text_file", json!({"path": format!("{r}/notes.txt")}))
            .call("list_directory", json!({"path": r}))
            .call("search_files", json!({"path": r, "pattern": "*.txt"})),
    );
    let every = node_server("server-everything");
    let report = same_through_the_gate(
        &agent,
        "everything",
        McpSession::new(&["node", every.to_str().unwrap(), "stdio"])
            .call("echo", json!({"message": "hi"}))
            .call("get-sum", json!({"a": 2, "b": 3}))
            .call("get-tiny-image", json!({}))
            .call("get-structured-content", json!({"location": "New York"})),
    );
    assert!(
        report["calls"][1]["text"].as_str().unwrap_or("").contains('5'),
        "{report}"
    );
    // The graph file is read, never written: each run sees the same graph.
    let graph = root.join("memory.jsonl");
    std::fs::write(
        &graph,
        "{\"type\":\"entity\",\"name\":\"mcpwatch\",\"entityType\":\"tool\",\"observations\":[\"watches\"]}\n",
    )
    .unwrap();
    same_through_the_gate(
        &agent,
        "memory",
        McpSession::new(&["npx", "--no-install", "mcp-server-memory"])
            .cwd(&testenv().join("node"))
            .env("MEMORY_FILE_PATH", graph.to_str().unwrap())
            .call("search_nodes", json!({"query": "mcpwatch"}))
            .call("read_graph", json!({})),
    );
    same_through_the_gate(
        &agent,
        "time",
        McpSession::new(&[&py(), "-m", "mcp_server_time", "--local-timezone", "UTC"]).call(
            "convert_time",
            json!({"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
        ),
    );
    let repo = git_repo("gate-ref-repo");
    let g = repo.to_string_lossy().into_owned();
    same_through_the_gate(
        &agent,
        "git",
        McpSession::new(&[&py(), "-m", "mcp_server_git", "--repository", &g])
            .call("git_status", json!({"repo_path": g}))
            .call("git_log", json!({"repo_path": g, "max_count": 5})),
    );
    // The gate passed every call (the audit says so) and refused nothing.
    let ev = agent.wait_events("gate audit", |ev| {
        ev.iter().filter(|e| e["kind"] == "gate.allowed").count() >= 13
    });
    assert!(
        !ev.iter()
            .any(|e| e["kind"] == "gate.denied" || e["rule"] == "gate.refused_message"),
        "{}",
        dump(&ev)
    );
}
