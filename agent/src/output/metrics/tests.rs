use super::*;

#[test]
fn families_are_prefixed_and_labels_bounded() {
    let m = Metrics::new().unwrap();
    m.event(Some("fs"), "exec");
    m.alert(None, "agent.test", "info", 0.001);
    m.tool_call("fs", "read_file");
    m.probe_errors("net", "sockaddr_unreadable", 2);
    m.probe_errors("net", "sockaddr_unreadable", 1);
    for i in 0..(MAX_SERVERS + 10) {
        m.event(Some(&format!("s{i}")), "fork");
    }
    let text = m.render();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("mcpwatch_") || line.starts_with("process_"), "{line}");
    }
    assert!(
        text.contains(r#"mcpwatch_events_total{kind="exec",server="fs"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"mcpwatch_events_total{kind="fork",server="other"} 11"#),
        "{text}"
    );
    assert!(text.contains(r#"mcpwatch_tool_calls_total{server="fs",tool="read_file"} 1"#));
    assert!(text.contains(r#"mcpwatch_alerts_total{rule="agent.test",server="-",severity="info"} 1"#));
    assert!(
        text.contains(r#"mcpwatch_probe_errors_total{probe="net",reason="sockaddr_unreadable"} 3"#),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes "));
    assert!(text.contains("process_cpu_seconds_total "));
    assert!(text.contains("mcpwatch_build_info{"));
}

#[test]
fn a_seen_server_has_every_alert_series_at_zero_and_keeps_its_watched_gauge() {
    let m = Metrics::new().unwrap();
    m.server_seen("fs", &["exec"]);
    let text = m.render();
    for r in rules::ALL {
        let line = format!(
            r#"mcpwatch_alerts_total{{rule="{}",server="fs",severity="{}"}} 0"#,
            r.id,
            r.severity.as_str()
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(text.contains(r#"mcpwatch_alerts_total{rule="agent.event_loss",server="-",severity="high"} 0"#));
    m.watched(&[("fs", 3)]);
    assert!(m.render().contains(r#"mcpwatch_watched_processes{server="fs"} 3"#));
    m.watched(&[]);
    let text = m.render();
    assert!(text.contains(r#"mcpwatch_watched_processes{server="fs"} 0"#), "{text}");
    assert!(text.contains("mcpwatch_watched_servers 0"), "{text}");
}

#[test]
fn a_forgotten_server_leaves_no_series_and_frees_its_place() {
    let m = Metrics::new().unwrap();
    m.server_seen("gone", &["exec", "fork"]);
    m.alert(Some("gone"), "file.read_undeclared", "medium", 0.001);
    m.tool_call("gone", "read_file");
    m.watched(&[("gone", 2)]);
    m.event(Some("kept"), "exec");
    assert!(m.render().contains(r#"server="gone""#));
    m.forget_server("gone");
    let text = m.render();
    assert!(!text.contains(r#"server="gone""#), "{text}");
    assert!(text.contains(r#"mcpwatch_events_total{kind="exec",server="kept"} 1"#));
    assert!(!m.servers.lock().unwrap().contains("gone"));
    assert!(m.tools.lock().unwrap().is_empty());
}
