//! Shipped manifests against the real reference servers from npm and PyPI, driven by the official
//! Python SDK client: a session doing its job raises no alert (the false-alert counts the README reports).

use mcpwatch_tests::{policy::*, *};
use serde_json::json;

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
