//! One readable line per event or alert: time, server, what happened, the
//! tool call that caused it; alerts coloured by severity on a terminal.

use anstyle::{AnsiColor, Style};
use serde_json::Value;

use super::s;

/// Longest argument list or path shown before it is cut with an ellipsis.
const WIDTH: usize = 160;

pub fn render(e: &Value, color: bool) -> String {
    let kind = s(e, "kind");
    let ts = s(e, "ts");
    // 2026-12-01T04:02:10.861808700Z -> 04:02:10.861
    let time = ts.get(11..23).unwrap_or(ts);
    let server = match s(e, "server") {
        "" => "-",
        x => x,
    };
    let (style, body) = match kind {
        "alert" => (severity_style(s(e, "severity")), alert(e)),
        _ => (Style::new(), event(kind, e)),
    };
    let call = match (s(e, "tool"), e.get("call_id").and_then(Value::as_str)) {
        ("", _) => String::new(),
        (t, Some(id)) => format!("  [{t}#{id}]"),
        (t, None) => format!("  [{t}]"),
    };
    let pid = match e.get("pid").and_then(Value::as_u64) {
        Some(p) if p > 0 => format!(" {p}"),
        _ => String::new(),
    };
    if color {
        let dim = Style::new().dimmed();
        let bold = Style::new().bold();
        format!("{dim}{time}{dim:#} {bold}{server}{bold:#}{pid} {style}{body}{style:#}{dim}{call}{dim:#}")
    } else {
        format!("{time} {server}{pid} {body}{call}")
    }
}

fn severity_style(sev: &str) -> Style {
    match sev {
        "critical" => Style::new().bold().fg_color(Some(AnsiColor::BrightRed.into())),
        "high" => Style::new().fg_color(Some(AnsiColor::Red.into())),
        "medium" => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
        _ => Style::new().fg_color(Some(AnsiColor::Cyan.into())),
    }
}

fn alert(e: &Value) -> String {
    let block = match e.get("would_block").and_then(Value::as_bool) {
        Some(true) => " (enforce would block)",
        _ => "",
    };
    format!(
        "ALERT {} {}: {}{block}",
        s(e, "severity").to_uppercase(),
        s(e, "rule"),
        cut(s(e, "summary"))
    )
}

fn event(kind: &str, e: &Value) -> String {
    let result = match (e.get("result").and_then(Value::as_i64), s(e, "error")) {
        (Some(r), err) if r < 0 => format!(" -> {}", if err.is_empty() { r.to_string() } else { err.to_owned() }),
        _ => String::new(),
    };
    match kind {
        "exec" => {
            let argv: Vec<&str> = e
                .get("argv")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!("exec {} ({}){result}", s(e, "exe"), cut(&argv.join(" ")))
        }
        "file" => {
            let access: Vec<&str> = e
                .get("access")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let to = match s(e, "path2") {
                "" => String::new(),
                p => format!(" -> {}", cut(p)),
            };
            format!("{} {} {}{to}{result}", s(e, "op"), access.join(","), cut(s(e, "path")))
        }
        "net" | "exposed" => {
            let host = match s(e, "hostname") {
                "" => String::new(),
                h => format!(" ({h})"),
            };
            let dest = match s(e, "unix_path") {
                "" => format!(
                    "{}:{}",
                    s(e, "addr"),
                    e.get("port").and_then(Value::as_u64).unwrap_or(0)
                ),
                p => p.to_owned(),
            };
            format!("{} {} {dest}{host}{result}", s(e, "op"), s(e, "proto"))
        }
        "dns" => {
            let d = e.get("dns").cloned().unwrap_or_default();
            format!("dns {} {} {}", s(&d, "direction"), s(&d, "qtype"), s(&d, "name"))
        }
        "fork" => format!("fork -> {}", e.get("child_pid").and_then(Value::as_u64).unwrap_or(0)),
        "exit" => format!("exit {}", e.get("exit_code").and_then(Value::as_i64).unwrap_or(0)),
        "risky" => format!("risky {}{result}", s(e, "risk")),
        "tool_call" => {
            let ms = e.get("duration_ns").and_then(Value::as_u64).unwrap_or(0) as f64 / 1e6;
            let outcome = match s(e, "error_message") {
                "" => "ok".to_owned(),
                m => format!("error: {}", cut(m)),
            };
            format!("tool call {:.1} ms, {outcome}{}", ms, touched(e))
        }
        "activity" => format!("activity{}", touched(e)),
        k if k.starts_with("gate.") => {
            let us = e.get("latency_us").and_then(Value::as_f64).unwrap_or(0.0);
            format!("{k} {} (+{us:.0} us)", s(e, "rule"))
        }
        k => format!("{k}{result}"),
    }
}

/// A summary-level line's `touched`: `; 3 files, 1 host, 0 programs`.
fn touched(e: &Value) -> String {
    let Some(t) = e.get("touched") else {
        return String::new();
    };
    let n = |k: &str| {
        t.get(k)
            .and_then(|l| l.get("count"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    format!(
        "; touched {} files, {} hosts, {} programs",
        n("files"),
        n("hosts"),
        n("programs")
    )
}

/// At most WIDTH characters, cut on a character boundary.
fn cut(t: &str) -> String {
    match t.char_indices().nth(WIDTH) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn alerts_and_events_read_as_sentences() {
        let a = json!({"kind": "alert", "ts": "2026-12-01T04:02:10.861808700Z", "rule": "cred.ssh",
            "severity": "high", "summary": "evil accessed SSH keys: /h/.ssh/id_rsa", "server": "evil",
            "pid": 9897, "tool": "spawn_late", "call_id": "3"});
        assert_eq!(
            render(&a, false),
            "04:02:10.861 evil 9897 ALERT HIGH cred.ssh: evil accessed SSH keys: /h/.ssh/id_rsa  [spawn_late#3]"
        );
        let coloured = render(&a, true);
        assert!(coloured.contains("\u{1b}[31m"), "high is red: {coloured:?}");
        let f = json!({"kind": "file", "ts": "2026-12-01T04:02:07.227754477Z", "server": "evil", "pid": 1,
            "op": "open", "access": ["read"], "path": "/x/libpython.so", "result": -2, "error": "ENOENT"});
        assert_eq!(
            render(&f, false),
            "04:02:07.227 evil 1 open read /x/libpython.so -> ENOENT"
        );
        let n = json!({"kind": "net", "ts": "2026-12-01T04:02:07.227754477Z", "server": "s", "pid": 2,
            "op": "connect", "proto": "tcp", "addr": "140.82.112.3", "port": 443, "hostname": "api.github.com"});
        assert_eq!(
            render(&n, false),
            "04:02:07.227 s 2 connect tcp 140.82.112.3:443 (api.github.com)"
        );
        let long = "é".repeat(500);
        assert!(cut(&long).ends_with("...") && cut(&long).chars().count() == WIDTH + 3);
    }
}
