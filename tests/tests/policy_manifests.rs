//! Manifests as files: reload on change and SIGHUP, errors that name file, line and field, the
//! shipped ones valid against the schema.

use mcpwatch_tests::{policy::*, *};
use serde_json::json;

#[test]
fn manifests_reload_on_change_and_sighup_and_bad_ones_keep_the_last_good() {
    let (agent, d) = evil_agent("pol-reload");
    let f = d.join("evil.json");
    let shell = || evil(&[("run_shell", json!({"command": "true"}))]);
    let (_, ev) = session(&agent, "evil", shell());
    assert_eq!(rules_of(&alerts(&ev, Some("evil"))), ["exec.shell"]);

    // Declare the shell: picked up by the poll, no alert for the second session.
    std::fs::write(&f, r#"{"name": "evil", "exec": ["sh"]}"#).unwrap();
    wait_log(&agent, "reloaded", 1);
    let before = alerts(&agent.events(), Some("evil")).len();
    let (_, ev) = session(&agent, "evil", shell());
    assert_eq!(alerts(&ev, Some("evil")).len(), before, "{}", dump(&ev));

    // A broken edit: reported with file, line and field; the last good version stays.
    std::fs::write(&f, "{\n  \"name\": \"evil\",\n  \"exec\": \"sh\"\n}\n").unwrap();
    let ev = agent.wait_events("manifest_invalid alert", |ev| {
        ev.iter().any(|e| e["rule"] == "policy.manifest_invalid")
    });
    let bad = ev.iter().find(|e| e["rule"] == "policy.manifest_invalid").unwrap();
    assert_eq!(bad["evidence"]["file"], f.to_string_lossy().as_ref());
    assert_eq!(bad["evidence"]["line"], 3);
    assert_eq!(bad["evidence"]["field"], "exec");
    assert!(
        bad["evidence"]["error"].as_str().unwrap().contains("invalid type"),
        "{bad}"
    );
    assert_eq!(bad["evidence"]["kept_last_good_version"], true);
    assert!(agent.log().contains(&format!("{}:3:", f.display())), "{}", agent.log());
    let before = alerts(&agent.events(), Some("evil")).len();
    let (_, ev) = session(&agent, "evil", shell());
    assert_eq!(
        alerts(&ev, Some("evil")).len(),
        before,
        "still judged by the last good version"
    );

    // SIGHUP reloads at once, even with nothing changed.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    wait_log(&agent, "SIGHUP: reloading", 1);
    assert!(agent.stop().success());
}

#[test]
fn check_manifests_reports_file_line_field_and_what_is_wrong() {
    let d = scratch_dir("pol-check");
    let good = d.join("good.json");
    std::fs::write(
        &good,
        r#"{"read": ["~/x"], "network": {"outbound": {"allow_host": [".example.com"]}}}"#,
    )
    .unwrap();
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{\n  \"read\": [\"/ok\",\n    \"relative/x\"]\n}\n").unwrap();
    let out = output(std::process::Command::new(bin()).arg("check-manifests").arg(&d));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:3:5: read[1]: pattern \"relative/x\" is not absolute",
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{}: ok (server good)", good.display())), "{err}");
    let out = output(
        std::process::Command::new(bin())
            .arg("check-manifests")
            .arg(shipped_manifests()),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("warning"),
        "the shipped manifests load without warnings:\n{err}"
    );
    // A tool grant wider than the server's loads, with a warning naming it.
    let wide = d.join("wide.json");
    std::fs::write(&wide, r#"{"read": ["/data"], "tools": {"t": {"read": ["/etc"]}}}"#).unwrap();
    let out = output(std::process::Command::new(bin()).arg("check-manifests").arg(&wide));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{}: warning: tools.t.read[0]: \"/etc\" is not within the server-wide `read`/`write`",
            wide.display()
        )),
        "{err}"
    );
}

#[test]
fn shipped_manifests_validate_against_the_schema() {
    let check = r#"
import glob, json, sys
import jsonschema
schema = json.load(open(sys.argv[1] + "/manifest.schema.json"))
jsonschema.Draft202012Validator.check_schema(schema)
files = [f for f in sorted(glob.glob(sys.argv[1] + "/*.json")) if not f.endswith(".schema.json")]
for f in files:
    jsonschema.validate(json.load(open(f)), schema)
jsonschema.validate({"tools": {"t": {"write": [], "network": {"outbound": {"allow_host": ["x.com"]}}}},
                     "pins": {"t": "sha256:" + "a" * 64}}, schema)
bads = [{"read": ["relative"], "mode": "strict"}, {"tools": {"t": {"reads": []}}},
        {"tools": {"t": {"read": ["relative"]}}}, {"pins": {"t": "sha256:abc"}}]
for bad in bads:
    try:
        jsonschema.validate(bad, schema)
        sys.exit(f"a bad manifest validated: {bad}")
    except jsonschema.ValidationError:
        pass
print(len(files))
"#;
    let out = output(
        std::process::Command::new(python())
            .arg("-c")
            .arg(check)
            .arg(shipped_manifests()),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6");
}

#[test]
fn a_directory_without_manifests_is_an_error_for_check_manifests_and_a_warning_for_the_agent() {
    let d = scratch_dir("pol-empty");
    std::fs::write(d.join("manifest.schema.json"), "{}").unwrap();
    let out = output(std::process::Command::new(bin()).arg("check-manifests").arg(&d));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "nothing was checked: {err}");
    assert!(err.contains(&format!("{}: no manifests here", d.display())), "{err}");
    let missing = d.join("absent");
    let agent = Agent::start("pol-empty-agent", &["--manifests", missing.to_str().unwrap()]);
    wait_log(&agent, "manifest directory", 1);
    let log = agent.log();
    assert!(
        log.contains(&format!("manifest directory {} cannot be read", missing.display()))
            && log.contains("every server is judged as undeclared"),
        "{log}"
    );
    assert!(agent.stop().success());
}
