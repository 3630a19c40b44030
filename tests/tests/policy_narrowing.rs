//! Narrowed grants against the real reference servers: exactly what the narrowing leaves out is alerted.

use mcpwatch_tests::{policy::*, *};
use serde_json::{Value, json};

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
    // One alert per tool that ran git (repeats are folded per tool: a second
    // tool running the same program is an alert of its own), each naming it.
    assert!(
        !a.is_empty() && a.iter().all(|a| a["rule"] == "exec.undeclared"),
        "{}",
        dump(&ev)
    );
    let mut tools: Vec<&str> = a.iter().map(|a| a["tool"].as_str().unwrap_or("")).collect();
    let n = tools.len();
    tools.sort_unstable();
    tools.dedup();
    assert_eq!(tools.len(), n, "one alert per tool: {}", dump(&ev));
    let a = a[0];
    assert!(a["evidence"]["program"].as_str().unwrap().ends_with("/git"), "{a}");
    assert_eq!(a["severity"], "medium");
    assert_eq!(a["mitre"]["id"], "T1059");
    assert_eq!(a["manifest"], f.to_string_lossy().as_ref());
    assert_eq!(a["declared"]["exec"][0], "(baseline: python)");
    assert!(a["ancestry"].as_array().is_some_and(|x| !x.is_empty()));
    // git ran several times: one alert per tool in full, the repeats counted (summary after the window).
    let git_execs = ev
        .iter()
        .filter(|e| e["kind"] == "exec" && e["server"] == "git" && e["exe"].as_str().unwrap_or("").ends_with("/git"))
        .count();
    assert!(git_execs > 1, "the session runs git more than once ({git_execs})");
    assert!(agent.stop().success());
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
