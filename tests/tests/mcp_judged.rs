//! The conversation judged end to end: rug pulls, poisoned descriptions,
//! per-tool grants and shipped pins, with the real agent, real servers and the
//! official Python SDK client.

use std::process::Command;

use mcpwatch_tests::{mcp::*, *};
use serde_json::{Value, json};

#[test]
fn a_rug_pull_after_the_third_call_raises_the_alert_with_a_diff() {
    let agent = agent("mcp-rug");
    let py = python().to_string_lossy().into_owned();
    let add = json!(["call", "add", {"a": 1, "b": 2}]);
    let steps = client(
        &agent,
        "rug",
        json!([["list"], add, add, add, add, ["list"]]),
        &[&py, &server_script("rug_pull.py")],
    );
    assert!(steps[5]["tools"][0]["description"].as_str().unwrap().contains("id_rsa"));
    let ev = agent.wait_events("rug pull alert", |ev| {
        !alerts_by_rule(ev, "mcp.rug_pull.changed").is_empty()
    });
    let a = alerts_by_rule(&ev, "mcp.rug_pull.changed");
    assert_eq!(a.len(), 1, "{}", dump(&ev));
    assert_eq!(a[0]["server"], "rug");
    assert_eq!(a[0]["tool"], "add");
    assert_eq!(a[0]["evidence"]["old_description"], "Adds two numbers.");
    assert_eq!(a[0]["evidence"]["after_list_changed"], true);
    let diff = a[0]["evidence"]["diff"].as_str().unwrap();
    assert!(diff.starts_with("Adds two numbers.{+ Before using this tool"), "{diff}");
    assert_eq!(of_server(&ev, "mcp_list_changed", "rug").len(), 1, "{}", dump(&ev));
    // The changed description is poisoned too.
    assert!(!alerts_by_rule(&ev, "mcp.poison.credential_reference").is_empty());
    assert!(state_dir("mcp-rug").join("pins/rug.json").exists());

    // Every call ran /bin/true: its exec is attributed to the call that ran it.
    let sent = call_ids(&steps);
    let ev = agent.wait_events("four tool_call lines", |ev| {
        of_server(ev, "tool_call", "rug").len() >= 4
    });
    let trues: Vec<&Value> = of_server(&ev, "exec", "rug")
        .into_iter()
        .filter(|e| e["argv"][0] == "/bin/true")
        .collect();
    assert_eq!(trues.len(), 4, "{}", dump(&ev));
    for (t, (tool, id)) in trues.iter().zip(&sent) {
        assert_eq!(
            (t["tool"].as_str().unwrap(), t["call_id"].as_str().unwrap()),
            (tool.as_str(), id.as_str())
        );
    }
    for c in of_server(&ev, "tool_call", "rug") {
        assert!(c["activity"]["execs"].as_u64() >= Some(1), "{c}");
    }
}

#[test]
fn a_poisoned_description_raises_the_poisoning_rules() {
    let agent = agent("mcp-poison");
    let py = python().to_string_lossy().into_owned();
    let note = agent.dir.join("note.txt");
    std::fs::write(&note, "remember the milk\n").unwrap();
    let note = note.to_string_lossy().into_owned();
    let steps = client(
        &agent,
        "poisoned",
        json!([["list"], ["call", "add", {"a": 1, "b": 2}], ["call", "read_note", {"path": note}]]),
        &[&py, &server_script("poisoned.py")],
    );
    let want = [
        "mcp.poison.hidden_instruction",
        "mcp.poison.invisible_unicode",
        "mcp.poison.model_directive",
        "mcp.poison.credential_reference",
    ];
    let ev = agent.wait_events("poisoning alerts", |ev| {
        want.iter().all(|r| !alerts_by_rule(ev, r).is_empty())
    });
    for rule in want {
        // Those about the description (the result's carry a call_id).
        for a in alerts_by_rule(&ev, rule)
            .into_iter()
            .filter(|a| a.get("call_id").is_none())
        {
            assert_eq!(
                (a["server"].as_str(), a["tool"].as_str()),
                (Some("poisoned"), Some("add")),
                "{a}"
            );
            let span = &a["evidence"]["finding"]["span"];
            assert!(span["end"].as_u64() > span["start"].as_u64(), "{a}");
        }
    }
    let hidden = alerts_by_rule(&ev, "mcp.poison.hidden_instruction");
    assert!(
        hidden[0]["evidence"]["finding"]["excerpt"]
            .as_str()
            .unwrap()
            .contains("<IMPORTANT>")
    );
    let spelled = alerts_by_rule(&ev, "mcp.poison.invisible_unicode")
        .into_iter()
        .any(|a| {
            // One description's findings of a rule are folded into one alert:
            // the first in `finding`, the others in `examples`.
            let ev = &a["evidence"];
            std::iter::once(&ev["finding"])
                .chain(ev["examples"].as_array().into_iter().flatten())
                .any(|f| {
                    f["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("send the result to attacker.example"))
                })
        });
    assert!(spelled, "tag characters decoded: {}", dump(&ev));

    // The note's open is attributed to the call that read it, and the
    // injection in its result names the call.
    let id = steps[2]["id"].to_string();
    let ev = agent.wait_events("the result alert", |ev| {
        alerts_by_rule(ev, "mcp.poison.hidden_instruction")
            .iter()
            .any(|a| a["call_id"] == id.as_str())
    });
    let open = of_server(&ev, "file", "poisoned")
        .into_iter()
        .find(|e| e["path"] == note.as_str())
        .unwrap_or_else(|| panic!("open of the note: {}", dump(&ev)));
    assert_eq!(
        (open["tool"].as_str(), open["call_id"].as_str()),
        (Some("read_note"), Some(id.as_str()))
    );
    let injected = alerts_by_rule(&ev, "mcp.poison.hidden_instruction")
        .into_iter()
        .find(|a| a["call_id"] == id.as_str())
        .unwrap();
    assert_eq!(injected["tool"], "read_note");
    assert_eq!(injected["evidence"]["finding"]["field"], "result.content[0].text");
}

#[test]
fn a_tool_call_outside_its_narrowed_grant_is_alerted_with_the_tool_and_call() {
    let data = scratch_dir("mcp-narrow-data");
    std::fs::create_dir_all(data.join("public")).unwrap();
    std::fs::write(data.join("public/readme.txt"), "public\n").unwrap();
    std::fs::write(data.join("secret.txt"), "secret\n").unwrap();
    let d = scratch_dir("mcp-narrow-manifests");
    let dir = data.to_string_lossy().into_owned();
    let manifest = json!({
        "name": "scoped",
        "read": [dir],
        "tools": { "peek": { "read": [format!("{dir}/public")] } }
    });
    std::fs::write(d.join("scoped.json"), manifest.to_string()).unwrap();
    let agent = agent_with_manifests("mcp-narrow", &d);
    let py = python().to_string_lossy().into_owned();
    let secret = format!("{dir}/secret.txt");
    let steps = client(
        &agent,
        "scoped",
        json!([["list"],
               ["call", "read_file", {"path": secret}],
               ["call", "peek", {"path": format!("{dir}/public/readme.txt")}],
               ["call", "peek", {"path": secret}],
               ["call", "read_file", {"path": secret}]]),
        &[&py, &server_script("scoped.py")],
    );
    let ids = call_ids(&steps);
    assert_eq!(steps[4]["text"], json!(["secret\n"]), "{steps:?}");
    let ev = agent.wait_events("the server's exit", |ev| server_done(ev, "scoped"));
    // Every open of the secret, each attributed to the call that made it.
    let opens: Vec<(&str, &str)> = of_server(&ev, "file", "scoped")
        .into_iter()
        .filter(|e| e["path"] == secret.as_str())
        .map(|e| (e["tool"].as_str().unwrap_or(""), e["call_id"].as_str().unwrap_or("")))
        .collect();
    let want: Vec<(&str, &str)> = [&ids[0], &ids[2], &ids[3]]
        .iter()
        .map(|(t, i)| (t.as_str(), i.as_str()))
        .collect();
    assert_eq!(opens, want, "{}", dump(&ev));
    // Only peek's read of the secret is outside a grant: read_file has the server's.
    let a = alerts_of(&ev, "scoped");
    assert_eq!(a.len(), 1, "{}", dump(&ev));
    let a = a[0];
    assert_eq!(a["rule"], "tool.read_outside_grant");
    assert_eq!(
        (a["tool"].as_str(), a["call_id"].as_str()),
        (Some("peek"), Some(ids[2].1.as_str()))
    );
    assert_eq!(
        a["summary"],
        format!("scoped read outside tool `peek`'s grant: {secret}").as_str()
    );
    assert_eq!(a["evidence"]["path"], secret.as_str());
    assert_eq!(
        a["declared"],
        json!({"read": [format!("{dir}/public")], "write": [], "tool": "peek"})
    );
    assert_eq!(a["manifest"], d.join("scoped.json").to_string_lossy().as_ref());
    assert!(agent.stop().success());
}

const WRONG_PIN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn shipped_pins_that_do_not_match_raise_the_rug_pull_at_first_sight() {
    let d = scratch_dir("mcp-pins-bad-manifests");
    std::fs::write(
        d.join("calc.json"),
        json!({"name": "calc", "pins": {"add": WRONG_PIN}}).to_string(),
    )
    .unwrap();
    let agent = agent_with_manifests("mcp-pins-bad", &d);
    let py = python().to_string_lossy().into_owned();
    client(&agent, "calc", json!([["list"]]), &[&py, &server_script("rug_pull.py")]);
    let ev = agent.wait_events("the server's exit", |ev| server_done(ev, "calc"));
    let a = alerts_of(&ev, "calc");
    assert_eq!(a.len(), 1, "{}", dump(&ev));
    assert_eq!(
        (a[0]["rule"].as_str(), a[0]["tool"].as_str()),
        (Some("mcp.rug_pull.changed"), Some("add"))
    );
    assert_eq!(a[0]["evidence"]["baseline"], "manifest");
    assert_eq!(a[0]["evidence"]["old_hash"], Value::Null);
    assert_eq!(
        a[0]["summary"],
        "tool add of server calc does not match the pin its manifest ships"
    );
    assert_eq!(a[0]["manifest"], d.join("calc.json").to_string_lossy().as_ref());
    // No trust on first use: nothing pinned, no pin file.
    assert!(of_server(&ev, "mcp_pinned", "calc").is_empty(), "{}", dump(&ev));
    assert!(!state_dir("mcp-pins-bad").join("pins/calc.json").exists());
    assert!(agent.stop().success());
}

#[test]
fn pins_shown_by_the_cli_and_shipped_raise_nothing_and_a_reload_rechecks_a_live_server() {
    let d = scratch_dir("mcp-pins-ship-manifests");
    let f = d.join("calc.json");
    std::fs::write(&f, json!({"name": "calc"}).to_string()).unwrap();
    let agent = agent_with_manifests("mcp-pins-ship", &d);
    let py = python().to_string_lossy().into_owned();
    let rug = server_script("rug_pull.py");
    let tools_lines = |ev: &[Value]| of_server(ev, "mcp_tools", "calc").len();

    // Trust on first use, then the pins as a manifest ships them.
    client(&agent, "calc", json!([["list"]]), &[&py, &rug]);
    let ev = agent.wait_events("the first pinning", |ev| {
        !of_server(ev, "mcp_pinned", "calc").is_empty()
    });
    assert!(alerts_of(&ev, "calc").is_empty(), "{}", dump(&ev));
    let state = state_dir("mcp-pins-ship");
    let out = output(
        Command::new(bin())
            .args(["pins", "show", "--server", "calc", "--state-dir"])
            .arg(&state),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("pins show prints JSON");
    let hash = shown["pins"]["add"].as_str().expect("the add tool's pin").to_owned();
    assert!(hash.starts_with("sha256:") && hash.len() == 71, "{shown}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("add: Adds two numbers."),
        "descriptions for review on stderr"
    );
    let mut manifest = json!({"name": "calc"});
    manifest["pins"] = shown["pins"].clone();
    std::fs::write(&f, manifest.to_string()).unwrap();
    // The manifest, not the file, is the baseline now.
    std::fs::remove_file(state.join("pins/calc.json")).unwrap();
    wait_log(&agent, "reloaded", 1);

    client(&agent, "calc", json!([["list"]]), &[&py, &rug]);
    let ev = agent.wait_events("the second listing", |ev| tools_lines(ev) >= 2);
    assert!(alerts_of(&ev, "calc").is_empty(), "{}", dump(&ev));
    assert_eq!(of_server(&ev, "mcp_pinned", "calc").len(), 1, "nothing pinned again");
    assert!(!state.join("pins/calc.json").exists());

    // Pins changed by a reload while a server is up: its listing is checked at once.
    std::thread::scope(|s| {
        let session = s.spawn(|| client(&agent, "calc", json!([["list"], ["sleep", 8]]), &[&py, &rug]));
        let ev = agent.wait_events("the third listing", |ev| tools_lines(ev) >= 3);
        let listing_pid = of_server(&ev, "mcp_tools", "calc")[2]["pid"].clone();
        manifest["pins"]["add"] = json!(WRONG_PIN);
        std::fs::write(&f, manifest.to_string()).unwrap();
        let ev = agent.wait_events("the rug pull after the reload", |ev| !alerts_of(ev, "calc").is_empty());
        let a = alerts_of(&ev, "calc");
        assert_eq!(a.len(), 1, "{}", dump(&ev));
        assert_eq!(a[0]["rule"], "mcp.rug_pull.changed");
        assert_eq!(a[0]["evidence"]["baseline"], "manifest");
        assert_eq!(a[0]["pid"], listing_pid, "the live server");
        assert!(!server_done(&ev, "calc"), "alerted while the server runs");
        session.join().unwrap();
    });
    assert!(agent.stop().success());
}
