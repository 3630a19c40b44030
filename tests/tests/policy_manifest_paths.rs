//! Path grants that name what the server is configured with rather than a
//! fixed path: `${env:NAME}` (the server's own environment) and a declared
//! file's siblings (SQLite's journal, atomic writes' temporary files).
//! Real reference servers, driven by the official SDK client: a session
//! doing its job raises no alert (the false-alert counts the README reports).

use mcpwatch_tests::{policy::*, *};
use serde_json::json;

#[test]
fn memory_with_its_file_set_by_environment_raises_no_alert() {
    let manifests = narrowed("pol-memenv", "memory", |m| {
        m["read"] = json!(["${env:MEMORY_FILE_PATH}"]);
        m["write"] = json!(["${env:MEMORY_FILE_PATH}"]);
    });
    let agent = agent_with("pol-memenv", &manifests, &[]);
    let data = scratch_dir("pol-memenv-data");
    let file = data.join("graph.json");
    let node = node_server("server-memory");
    let s = McpSession::new(&["node", node.to_str().unwrap()])
        .env("MEMORY_FILE_PATH", file.to_str().unwrap())
        .call(
            "create_entities",
            json!({"entities": [{"name": "mcpwatch", "entityType": "tool", "observations": ["watches"]}]}),
        )
        .call(
            "add_observations",
            json!({"observations": [{"entityName": "mcpwatch", "contents": ["judges"]}]}),
        )
        .call("search_nodes", json!({"query": "mcpwatch"}))
        .call("read_graph", json!({}));
    let (report, ev) = session(&agent, "memory", s);
    assert!(
        report["calls"][2]["text"].as_str().unwrap_or("").contains("judges"),
        "{report}"
    );
    assert!(
        std::fs::read_to_string(&file).unwrap().contains("mcpwatch"),
        "the file set by environment was written"
    );
    assert_no_alerts("memory", &ev);
    assert!(agent.stop().success());
}

#[test]
fn an_unset_environment_variable_drops_its_grant_with_a_warning() {
    let manifests = narrowed("pol-memunset", "memory", |m| {
        m["read"] = json!(["${env:MCPWATCH_TEST_UNSET_VAR}"]);
        m["write"] = json!(["${env:MCPWATCH_TEST_UNSET_VAR}"]);
    });
    let agent = agent_with("pol-memunset", &manifests, &[]);
    let data = scratch_dir("pol-memunset-data");
    let node = node_server("server-memory");
    let s = McpSession::new(&["node", node.to_str().unwrap()])
        .env("MEMORY_FILE_PATH", data.join("graph.json").to_str().unwrap())
        .call(
            "create_entities",
            json!({"entities": [{"name": "x", "entityType": "t", "observations": []}]}),
        );
    let (_, ev) = session(&agent, "memory", s);
    assert!(
        agent
            .log()
            .contains("${env:MCPWATCH_TEST_UNSET_VAR} is not set in the server's environment"),
        "{}",
        agent.log()
    );
    let a = alerts(&ev, Some("memory"));
    assert!(
        a.iter().any(|a| a["rule"] == "file.write_undeclared"),
        "no grant: the write is undeclared:\n{}",
        dump(&a.into_iter().cloned().collect::<Vec<_>>())
    );
    assert!(agent.stop().success());
}

#[test]
fn sqlite_from_pypi_with_its_database_declared_raises_no_alert() {
    let data = scratch_dir("pol-sqlite-data");
    let db = data.join("app.db");
    let d = scratch_dir("pol-sqlite-manifests");
    std::fs::write(
        d.join("sqlite.json"),
        json!({
            "name": "sqlite",
            "description": "mcp-server-sqlite (PyPI): one database file",
            "mode": "audit",
            "read": [db],
            "write": [db],
            "network": {"outbound": {"insecure_allow_all": false, "allow_host": []}},
            "exec": []
        })
        .to_string(),
    )
    .unwrap();
    let agent = agent_with("pol-sqlite", &d, &[]);
    let server = testenv().join("venv-sdk1/bin/mcp-server-sqlite");
    let s = McpSession::new(&[server.to_str().unwrap(), "--db-path", db.to_str().unwrap()])
        .call(
            "create_table",
            json!({"query": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"}),
        )
        .call(
            "write_query",
            json!({"query": "INSERT INTO notes (body) VALUES ('hello')"}),
        )
        .call("write_query", json!({"query": "UPDATE notes SET body = 'hello again'"}))
        .call("read_query", json!({"query": "SELECT body FROM notes"}))
        .call("list_tables", json!({}));
    let (report, ev) = session(&agent, "sqlite", s);
    assert!(
        report["calls"][3]["text"]
            .as_str()
            .unwrap_or("")
            .contains("hello again"),
        "{report}"
    );
    assert!(
        ev.iter()
            .any(|e| e["server"] == "sqlite" && e["path"].as_str().is_some_and(|p| p.ends_with("app.db-journal"))),
        "SQLite wrote its rollback journal beside the database"
    );
    assert_no_alerts("sqlite", &ev);
    assert!(agent.stop().success());
}

#[test]
fn filesystem_with_client_roots_raises_no_alert() {
    // No directory on its command line: the server works in the roots the
    // client gives it (`roots/list`), which `${roots}` grants.
    let agent = agent_with("pol-fsroots", &shipped_manifests(), &[]);
    let root = scratch_dir("pol-fsroots-root");
    std::fs::write(root.join("notes.txt"), "hello\n").unwrap();
    let r = root.to_string_lossy().into_owned();
    let node = node_server("server-filesystem");
    let mut s = McpSession::new(&["node", node.to_str().unwrap()]);
    s.roots.push(root.clone());
    let s = s
        .call("list_allowed_directories", json!({}))
        .call("read_text_file", json!({"path": format!("{r}/notes.txt")}))
        .call(
            "write_file",
            json!({"path": format!("{r}/out.txt"), "content": "written"}),
        )
        .call("list_directory", json!({"path": r}))
        .call("get_file_info", json!({"path": format!("{r}/out.txt")}));
    let (report, ev) = session(&agent, "filesystem", s);
    assert!(
        report["calls"][1]["text"].as_str().unwrap_or("").contains("hello"),
        "{report}"
    );
    assert_eq!(std::fs::read_to_string(root.join("out.txt")).unwrap(), "written");
    assert!(agent.log().contains("client roots"), "{}", agent.log());
    assert_no_alerts("filesystem", &ev);
    assert!(agent.stop().success());
}
