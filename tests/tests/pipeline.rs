//! The pipeline interprets each event once: the event line and the judgement
//! read the same observation and cannot disagree; every alert is made by one
//! factory (one id scheme, catalogue severity and technique); alerts go to the
//! sinks, not to the daemon's log.

use mcpwatch_tests::*;

#[test]
fn an_exec_through_a_proc_fd_path_is_fileless_on_its_line_and_in_its_alert() {
    // The file has links (a copy of /bin/true on disk): only the path given
    // to exec says it runs from a descriptor.
    let d = scratch_dir("fdexec-payload");
    let copy = d.join("t");
    std::fs::copy("/bin/true", &copy).unwrap();
    let agent = Agent::start("fdexec", &[]);
    agent.run_python(
        "fdexec",
        &format!(
            r#"
import os
fd = os.open("{}", os.O_RDONLY)
pid = os.fork()
if pid == 0:
    os.execve(f"/proc/self/fd/{{fd}}", ["fdexec-payload"], {{}})
os.waitpid(pid, 0)
"#,
            copy.display()
        ),
    );
    let ev = agent.wait_events("the fileless alert", |ev| {
        alerts(ev, Some("fdexec")).iter().any(|a| a["rule"] == "exec.fileless")
    });
    let e = find(&ev, "exec", |e| e["argv"][0] == "fdexec-payload");
    assert_eq!(e["fileless"], true, "the line agrees with the alert: {e}");
    assert!(agent.stop().success());
}

#[test]
fn alerts_have_one_id_scheme_one_sequence_and_catalogue_techniques() {
    let agent = Agent::start("alertids", &[]);
    // A policy alert (credential read, undeclared server) ...
    agent.run_python(
        "alertids",
        r#"
import os
try:
    open(os.path.expanduser("~/.ssh/id_rsa_mcpwatch_test"))
except OSError:
    pass
"#,
    );
    // ... and an agent alert.
    let test_id = agent.test_alert();
    let ev = agent.wait_events("the alerts", |ev| alerts(ev, None).iter().any(|a| a["id"] == test_id));
    let all = alerts(&ev, None);
    assert!(all.len() >= 3, "{}", dump(&ev));
    let mut seqs: Vec<u64> = all
        .iter()
        .map(|a| {
            let id = a["id"].as_str().unwrap();
            let (ktime, seq) = id.split_once('-').unwrap_or_else(|| panic!("id {id}"));
            assert!(ktime.parse::<u64>().is_ok(), "id {id}");
            seq.parse::<u64>().unwrap_or_else(|_| panic!("one id scheme: {id}"))
        })
        .collect();
    seqs.sort_unstable();
    let n = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "one sequence: no id reused");
    let t = all.iter().find(|a| a["id"] == test_id).unwrap();
    assert_eq!(
        (t["rule"].as_str(), t["severity"].as_str()),
        (Some("agent.test"), Some("info"))
    );
    assert!(agent.stop().success());
}

#[test]
fn mcp_alerts_carry_their_catalogue_technique() {
    let agent = Agent::start("poisonmitre", &[]);
    McpSession::new(&[python().to_str().unwrap(), &server_script("poisoned.py")])
        .wrapped(&agent, "poisonmitre")
        .run();
    let ev = agent.wait_events("a poisoning alert", |ev| {
        alerts(ev, Some("poisonmitre"))
            .iter()
            .any(|a| a["rule"].as_str().is_some_and(|r| r.starts_with("mcp.poison.")))
    });
    for a in alerts(&ev, Some("poisonmitre")) {
        if a["rule"].as_str().is_some_and(|r| r.starts_with("mcp.")) {
            assert!(a["mitre"]["id"].is_string(), "every MCP rule has a technique: {a}");
        }
    }
    assert!(agent.stop().success());
}

#[test]
fn alerts_are_not_logged_one_by_one() {
    let agent = Agent::start("alertlog", &[]);
    for _ in 0..5 {
        agent.test_alert();
    }
    let ev = agent.wait_events("5 test alerts", |ev| {
        alerts(ev, None).iter().filter(|a| a["rule"] == "agent.test").count() == 5
    });
    assert_eq!(alerts(&ev, None).len(), 5);
    let log = agent.log();
    assert!(
        !log.contains("agent.test"),
        "an alert storm must not flood the daemon's log:\n{log}"
    );
    assert!(agent.stop().success());
}

fn server_script(name: &str) -> String {
    repo()
        .join("tests/mcp/servers")
        .join(name)
        .to_string_lossy()
        .into_owned()
}
