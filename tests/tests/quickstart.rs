//! The README's Quick start, done as a new user does it: install (into a
//! DESTDIR), start the agent with the installed configuration and manifests,
//! put the installed `mcpwatch exec --server filesystem --` in front of
//! `npx -y @modelcontextprotocol/server-filesystem DIR`, make tool calls with
//! the official SDK client, read the result with `mcpwatch tail`. A reference
//! server doing its job must raise no alert.

use std::process::Command;

use mcpwatch_tests::*;
use serde_json::json;

#[test]
fn the_quick_start_as_written_raises_no_alert_and_tail_reads_it() {
    // Step 1: `cargo xtask install` (into a DESTDIR, with the binary under test).
    let root = scratch_dir("quickstart-root");
    let out = output(
        Command::new("cargo")
            .args(["xtask", "install", "--destdir"])
            .arg(&root)
            .arg("--bin")
            .arg(bin())
            .current_dir(repo()),
    );
    assert!(
        out.status.success(),
        "cargo xtask install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = root.join("usr/local/bin/mcpwatch");
    let manifests = root.join("etc/mcpwatch/manifests");
    assert!(
        manifests.join("filesystem.json").exists(),
        "the install puts the shipped manifests in /etc/mcpwatch/manifests"
    );
    // ... and the agent as the installed unit starts it (its configuration
    // file), reading the installed manifests (its default directory, under
    // the DESTDIR here). Not this test machine's own MCP host configurations.
    let config = root.join("etc/mcpwatch/config.toml");
    let agent = Agent::start(
        "quickstart",
        &[
            "--config",
            config.to_str().unwrap(),
            "--manifests",
            manifests.to_str().unwrap(),
            "--no-metrics",
            "--no-user-host-configs",
        ],
    );
    // Step 2: the host configuration's command, with the server's directory.
    let projects = scratch_dir("quickstart-projects");
    std::fs::write(projects.join("notes.md"), "# notes\nmcpwatch quick start\n").unwrap();
    let projects = projects.canonicalize().unwrap();
    let dir = projects.to_str().unwrap();
    // npx from the test environment's project, which has the package: the
    // same command line, resolved locally (no registry, a pinned version).
    let session = McpSession::new(&[
        installed.to_str().unwrap(),
        "exec",
        "--server",
        "filesystem",
        "--socket",
        agent.socket.to_str().unwrap(),
        "--",
        "npx",
        "-y",
        "@modelcontextprotocol/server-filesystem",
        dir,
    ])
    .cwd(&testenv().join("node"))
    .call("list_allowed_directories", json!({}))
    .call("list_directory", json!({"path": dir}))
    .call("read_text_file", json!({"path": format!("{dir}/notes.md")}))
    .call(
        "write_file",
        json!({"path": format!("{dir}/todo.md"), "content": "- try mcpwatch top\n"}),
    );
    let report = session.run();
    assert!(
        report["calls"][2]["text"]
            .as_str()
            .unwrap_or("")
            .contains("mcpwatch quick start"),
        "{report}"
    );
    assert!(projects.join("todo.md").exists(), "{report}");
    agent.wait_events("the filesystem server to exit", |ev| server_done(ev, "filesystem"));
    // Alerts come before the exit line; a straggler's last events after it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ev = agent.events();
    assert!(
        ev.iter().any(|e| e["kind"] == "exec" && e["server"] == "filesystem"),
        "the server ran under watch: {}",
        dump(&ev)
    );
    // Zero alerts, of any rule, for anything.
    let a = alerts(&ev, None);
    assert!(
        a.is_empty(),
        "the Quick start raised alerts:\n{}",
        dump(&a.into_iter().cloned().collect::<Vec<_>>())
    );
    // Step 4: read it as a person, with the installed binary.
    let out = output(
        Command::new(&installed)
            .args([
                "tail",
                "--no-follow",
                "--color",
                "never",
                "--since",
                "1h",
                "--server",
                "filesystem",
                "--file",
            ])
            .arg(&agent.events_path),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let time = regex::Regex::new(r"^\d\d:\d\d:\d\d\.\d{3} filesystem \d+ ").unwrap();
    assert!(
        text.lines().all(|l| time.is_match(l)),
        "every line: time, server, pid:\n{text}"
    );
    let notes = format!("{dir}/notes.md");
    assert!(
        text.lines().any(|l| l.contains(" read ") && l.contains(&notes)),
        "the file the tool read:\n{text}"
    );
    assert!(!text.contains("\"kind\""), "readable lines, not JSON:\n{text}");
    assert!(agent.stop().success());
    // The installed tree holds a copy of the binary (hundreds of MB in debug).
    let _ = std::fs::remove_dir_all(&root);
}
