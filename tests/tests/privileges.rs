//! The agent's capabilities: without a required one it says which and why
//! instead of an EPERM from its first map; with the unit's set it works (the
//! whole process and policy rooms run again that way: `cargo xtask test`
//! sets MCPWATCH_LEAST_PRIVILEGE=1 for them).

use std::process::Command;

use mcpwatch_tests::*;

#[test]
fn an_agent_without_perfmon_names_the_missing_capability() {
    require_root();
    let d = scratch_dir("caps-missing");
    let pin_dir = std::path::Path::new("/sys/fs/bpf").join(d.file_name().unwrap());
    let out = output(agent_args(&mut with_caps("bpf,sys_ptrace"), &d, &pin_dir).env("RUST_BACKTRACE", "0"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("missing here: CAP_PERFMON (tracing programs"),
        "the message names what is missing and why: {err}"
    );
    assert!(!err.contains("CAP_BPF ("), "CAP_BPF was given: {err}");
    assert!(!err.contains("Operation not permitted"), "no bare EPERM: {err}");
    assert!(
        err.contains("without CAP_NET_ADMIN"),
        "the optional ones are warned about: {err}"
    );
}

#[test]
fn an_agent_with_the_units_capabilities_only_follows_a_wrapped_tree() {
    let agent = Agent::start_least_privileged("caps-unit", &[]);
    let caps = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let eff = caps.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    // bpf (39), perfmon (38), sys_ptrace (19), net_admin (12), dac_read_search (2); no sys_admin (21).
    assert_eq!(
        eff.split_whitespace().nth(1),
        Some("000000c000081004"),
        "the agent holds exactly the unit's set"
    );
    let out = output(&mut agent.wrap("capsunit", &["sh", "-c", "cat /etc/hostname >/dev/null; exit 4"]));
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let ev = agent.wait_events("cat's open", |ev| {
        ev.iter()
            .any(|e| e["server"] == "capsunit" && e["path"] == "/etc/hostname" && e["kind"] != "exec")
    });
    let cat = exec_of(&ev, "/cat");
    assert_eq!(cat.len(), 1, "{}", dump(&ev));
    assert_eq!(cat[0]["server"], "capsunit");
    assert!(!agent.log().contains("ERROR"), "{}", agent.log());
    assert!(agent.stop().success());
}

#[test]
fn a_non_root_agent_names_what_it_needs_before_touching_its_state_directory() {
    require_root();
    let d = scratch_dir("caps-nonroot");
    // The state directory sits in a root-owned directory: a user cannot create
    // it, and the agent must say what it needs before it tries.
    let pin_dir = std::path::Path::new("/sys/fs/bpf").join(d.file_name().unwrap());
    let mut nobody = Command::new("setpriv");
    nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin());
    let out = output(agent_args(&mut nobody, &d, &pin_dir).env("RUST_BACKTRACE", "0"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("mcpwatch agent needs root or these capabilities, missing here: CAP_BPF"),
        "the first error names the capabilities: {err}"
    );
    assert!(
        !err.contains("Permission denied"),
        "no bare EACCES from the state directory: {err}"
    );
    assert!(!d.join("state").exists());
}
