//! Metrics end to end: a real Prometheus (the Debian package's binary, with a
//! private config, data dir and port) scrapes a live agent and loads the
//! shipped alerting rules; every query of the shipped Grafana dashboard
//! returns data through Prometheus' HTTP API.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use mcpwatch_tests::*;
use serde_json::Value;

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Prometheus {
    daemon: Daemon,
    addr: String,
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        let rules = dashboards().join("prometheus-rules.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: mcpwatch\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules.canonicalize().expect("rules file").display()
            ),
        )
        .expect("prometheus config");
        let addr = format!("127.0.0.1:{port}");
        let daemon = Daemon::spawn(
            "prometheus",
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn"),
            dir.join("prometheus.log"),
        );
        Prometheus { daemon, addr }
    }

    fn api(&mut self, path: &str) -> Value {
        self.daemon.assert_running();
        let (code, body) = http_get(&self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "GET {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
        assert_eq!(v["status"], "success", "{path}: {body}");
        v["data"].clone()
    }

    /// The query's result, or None while Prometheus does not answer yet.
    fn try_query(&mut self, expr: &str) -> Option<Vec<Value>> {
        self.daemon.assert_running();
        let (code, body) = http_get(&self.addr, &format!("/api/v1/query?query={}", encode(expr))).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200).then(|| v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    fn query(&mut self, expr: &str) -> Vec<Value> {
        let d = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        d["result"].as_array().cloned().unwrap_or_default()
    }
}

/// A dashboard query as Grafana would send it, with "All" selected.
fn substitute(expr: &str) -> String {
    expr.replace("$instance", ".*")
        .replace("$server", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "5m")
}

fn metric_names(expr: &str) -> Vec<String> {
    names_with_prefix(expr, "mcpwatch_")
}

fn names_with_prefix(expr: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(prefix) {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// The metrics whose samples a `rate()`, `irate()` or `increase()` of `expr`
/// reads (its range-vector arguments).
fn rated_metrics(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for f in ["rate(", "increase("] {
        for (i, _) in expr.match_indices(f) {
            let arg = &expr[i + f.len()..];
            let arg = &arg[..arg.find(']').unwrap_or(arg.len())];
            out.extend(names_with_prefix(arg, "mcpwatch_"));
            out.extend(names_with_prefix(arg, "process_"));
        }
    }
    out
}

/// The colour a stat shows for `value` under its absolute thresholds.
fn colour_at(steps: &[Value], value: f64) -> String {
    let mut colour = String::new();
    for s in steps {
        if s["value"].as_f64().is_none_or(|v| value >= v) {
            colour = s["color"].as_str().unwrap_or_default().to_owned();
        }
    }
    colour
}

/// What an operator reads off a panel: a description, a unit, thresholds on
/// stats that turn loss and backlog away from green, totals from increase()
/// over non-overlapping windows, one unit per axis.
fn check_panel_presentation(p: &Value, title: &str) {
    assert!(
        p["description"].as_str().is_some_and(|d| !d.trim().is_empty()),
        "{title}: a description"
    );
    let defaults = &p["fieldConfig"]["defaults"];
    assert!(
        defaults["unit"].as_str().is_some_and(|u| !u.is_empty()),
        "{title}: a unit"
    );
    let exprs: Vec<&str> = p["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["expr"].as_str())
        .collect();
    if p["type"] == "stat" {
        let steps = defaults["thresholds"]["steps"].as_array().expect("stat thresholds");
        assert!(
            !steps.is_empty() && steps[0]["value"].is_null(),
            "{title}: thresholds start at a base step"
        );
        assert_eq!(
            defaults["color"]["mode"], "thresholds",
            "{title}: coloured by thresholds"
        );
        let bad = ["lost", "backlog", "dropped", "alerts_total"];
        if exprs.iter().any(|e| bad.iter().any(|b| e.contains(b))) {
            assert_ne!(colour_at(steps, 0.0), "red", "{title}: 0 is fine");
            assert!(
                !["green", ""].contains(&colour_at(steps, 5.0).as_str()),
                "{title}: 5 must not show green"
            );
        }
        if exprs.iter().any(|e| e.contains("count(mcpwatch_build_info")) {
            assert_eq!(colour_at(steps, 0.0), "red", "{title}: no agent is red");
        }
    }
    for e in &exprs {
        // increase() over $__rate_interval overlaps from one point to the
        // next: totals are counted twice.
        assert!(
            !(e.contains("increase(") && e.contains("[$__rate_interval]")),
            "{title}: increase() over $__rate_interval double-counts: {e}"
        );
    }
    // Bytes next to counts: the bytes have their own unit (and axis).
    for t in p["targets"].as_array().unwrap() {
        let e = t["expr"].as_str().unwrap_or_default();
        let bytes = metric_names(e).iter().any(|m| m.ends_with("_bytes"))
            || names_with_prefix(e, "process_").iter().any(|m| m.ends_with("_bytes"));
        let overridden = p["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["matcher"]["id"] == "byFrameRefID" && o["matcher"]["options"] == t["refId"]);
        let unit = overridden
            .and_then(|o| {
                o["properties"]
                    .as_array()?
                    .iter()
                    .find(|p| p["id"] == "unit")
                    .and_then(|p| p["value"].as_str())
            })
            .or(defaults["unit"].as_str())
            .unwrap_or_default();
        assert_eq!(bytes, unit == "bytes", "{title}: {e} shown in {unit}");
    }
}

/// Every (panel title, expr) of the dashboard, after checking the structure
/// Grafana needs to import it.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dashboards().join("grafana-mcpwatch.json")).expect("dashboard");
    let d: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    assert!(d["id"].is_null(), "import-ready dashboards carry no id");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds["name"].as_str().unwrap());
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], ds_ref.as_str(), "variable {}", v["name"]);
    }
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in panels {
        let title = p["title"].as_str().expect("panel title").to_owned();
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate id: {title}");
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24);
        if p["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat", "table"].contains(&p["type"].as_str().unwrap()),
            "{title}"
        );
        assert_eq!(p["datasource"]["uid"], ds_ref.as_str(), "{title}");
        check_panel_presentation(p, &title);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert!(t["refId"].is_string(), "{title}");
            assert_eq!(t["datasource"]["uid"], ds_ref.as_str(), "{title}");
            out.push((title.clone(), t["expr"].as_str().expect("expr").to_owned()));
        }
    }
    out
}

fn rule_exprs() -> Vec<(String, String)> {
    // The rules file is small and regular: `- alert: NAME` then `expr: ...`.
    let text = std::fs::read_to_string(dashboards().join("prometheus-rules.yml")).expect("rules");
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- alert: ") {
            name = n.to_owned();
        } else if let Some(e) = line.strip_prefix("expr: ") {
            out.push((name.clone(), e.to_owned()));
        }
    }
    // Every rule's expression was found (and there are rules).
    assert_eq!(out.len(), text.matches("- alert: ").count(), "{text}");
    assert!(out.len() >= 8, "{text}");
    out
}

/// The rules' own unit tests (dashboards/prometheus-rules.test.yml): the
/// first high alert fires and keeps its severity, loss, backlog, drops and
/// a down agent each alert when they should and not before.
#[test]
fn promtool_rule_unit_tests_pass() {
    promtool_succeeds(&["test", "rules"], "prometheus-rules.test.yml");
}

/// Runs `promtool ARGS dashboards/FILE` and asserts it succeeds.
fn promtool_succeeds(args: &[&str], file: &str) {
    let out = output(
        Command::new("promtool")
            .args(args)
            .arg(dashboards().join(file))
            .stdout(Stdio::piped()),
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `promtool check metrics` on a live /metrics: no lint finding.
fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics:\n{said}"
    );
}

#[test]
fn promtool_accepts_the_rules() {
    promtool_succeeds(&["check", "rules"], "prometheus-rules.yml");
}

/// One `echo` call to the npm server-everything, wrapped as server `promtools`.
fn mcp_tool_call(agent: &Agent) {
    let env = testenv();
    let everything = env.join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let out = output(
        Command::new(env.join("venv/bin/python"))
            .env_remove("LD_LIBRARY_PATH")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/client.py"))
            .arg(r#"[["call", "echo", {"message": "hi"}]]"#)
            .arg("--")
            .arg(bin())
            .args(["exec", "--server", "promtools", "--require-agent", "--socket"])
            .arg(&agent.socket)
            .arg("--")
            .arg("node")
            .arg(&everything)
            .arg("stdio"),
    );
    assert!(
        out.status.success(),
        "MCP client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child killed when the test ends, passed or not: the wrapped server
/// blocks on a fifo and must not outlive a failed test.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_agent_and_every_dashboard_query_has_data() {
    let agent = Agent::start_with_config(
        "prom",
        "spool_dir = \"{dir}/spool\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
         [[sinks]]\nname = \"local\"\nfile = { path = \"{dir}/alerts.jsonl\" }\n",
        &[],
    );
    let addr = agent.metrics_address();
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(&addr, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(&addr, "/nothing").unwrap().0, 404);

    let dir = scratch_dir("prom-server");
    let mut prom = Prometheus::start(&dir, &addr);
    let prom_log = prom.daemon.log_path.clone();
    let prom_log = move || std::fs::read_to_string(&prom_log).unwrap_or_default();
    wait_for(
        "Prometheus to scrape the agent",
        Duration::from_secs(30),
        || {
            let r = prom.try_query("up{job=\"mcpwatch\"} == 1")?;
            (!r.is_empty()).then_some(())
        },
        &prom_log,
    );

    // Activity after the first scrape, so rates see it: a watched server
    // that stays up (undeclared: it raises policy alerts of its own), three
    // test alerts, and a tool call. The server reads an SSH key (a high
    // alert) only once Prometheus has seen its alert series at 0.
    let fifo = dir.join("go");
    assert!(output(Command::new("mkfifo").arg(&fifo)).status.success());
    let script = format!(
        "/bin/true; /bin/true; read x < {}; cat {}/.ssh/id_rsa 2>/dev/null; exec sleep 120",
        fifo.display(),
        dir.display()
    );
    let mut server = Reaped(
        agent
            .wrap("promsrv", &["sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("wrapped server"),
    );
    wait_for(
        "the server's alert series at 0 in Prometheus before its first alert",
        Duration::from_secs(30),
        || {
            let r =
                prom.try_query("mcpwatch_alerts_total{server=\"promsrv\",rule=\"cred.ssh\",severity=\"high\"} == 0")?;
            (!r.is_empty()).then_some(())
        },
        || http_get(&addr, "/metrics").map(|r| r.1).unwrap_or_default(),
    );
    std::fs::write(&fifo, "go\n").expect("fifo");
    agent.wait_events("the server's sleep", |ev| {
        ev.iter().any(|e| {
            e["kind"] == "exec" && e["server"] == "promsrv" && e["exe"].as_str().unwrap_or("").ends_with("sleep")
        })
    });
    for _ in 0..3 {
        agent.test_alert();
        std::thread::sleep(Duration::from_millis(300));
    }
    // A real MCP tool call: the npm reference server driven by the official SDK client.
    mcp_tool_call(&agent);
    wait_for(
        "the alerts, deliveries and the watched server in Prometheus",
        Duration::from_secs(30),
        || {
            let alerts = prom.query("sum(mcpwatch_alerts_total{rule=\"agent.test\",severity=\"info\"}) == 3");
            let delivered = prom.query("mcpwatch_sink_alerts_delivered_total{sink=\"local\"} >= 3");
            let watched = prom.query("mcpwatch_watched_processes{server=\"promsrv\"} >= 1");
            let rate = prom.query("sum(rate(mcpwatch_alert_latency_seconds_count[1m])) > 0");
            let tools = prom.query("mcpwatch_tool_calls_total{server=\"promtools\",tool=\"echo\"} >= 1");
            (!alerts.is_empty()
                && !delivered.is_empty()
                && !watched.is_empty()
                && !rate.is_empty()
                && !tools.is_empty())
            .then_some(())
        },
        || {
            format!(
                "{}\n{}",
                http_get(&addr, "/metrics").map(|r| r.1).unwrap_or_default(),
                agent.log()
            )
        },
    );
    let execs = prom.query("mcpwatch_events_total{server=\"promsrv\",kind=\"exec\"}");
    assert!(
        execs[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 3.0,
        "{execs:?}"
    );
    let lost = prom.query("mcpwatch_ringbuf_lost_events_total{server=\"promsrv\"}");
    assert_eq!(
        lost.len(),
        8,
        "one zero series per kernel kind (process, file, net, dns, risky, stdio): {lost:?}"
    );
    assert!(
        !prom
            .query("process_resident_memory_bytes{job=\"mcpwatch\"} > 1e6")
            .is_empty()
    );
    // Present, not necessarily above zero: the agent's own CPU can still be
    // under one clock tick here (its loading process parses the BTF).
    assert!(
        !prom
            .query("process_cpu_seconds_total{job=\"mcpwatch\"} >= 0")
            .is_empty()
    );
    promtool_check_metrics(&http_get(&addr, "/metrics").unwrap().1);
    assert!(!prom.query("mcpwatch_build_info == 1").is_empty());

    // Every dashboard query returns data.
    let names = prom.api("/api/v1/label/__name__/values");
    let names: Vec<&str> = names.as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let exported = |m: &str| names.contains(&m) || names.contains(&format!("{m}_bucket").as_str());
    let queries: Vec<(String, String)> = dashboard_queries();
    for (title, expr) in &queries {
        for m in metric_names(expr) {
            let base = m.strip_suffix("_bucket").unwrap_or(&m);
            assert!(exported(base), "panel {title:?}: {m} not exported");
        }
    }
    // Rates and increases need two samples of a series: give the scrapes a moment.
    let mut empty: Vec<String> = Vec::new();
    for _ in 0..100 {
        empty = queries
            .iter()
            .filter(|(_, expr)| prom.query(&substitute(expr)).is_empty())
            .map(|(title, expr)| format!("panel {title:?}: no data for {}", substitute(expr)))
            .collect();
        if empty.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(empty.is_empty(), "{}", empty.join("\n"));
    // rate() and increase() only on counters (and histogram buckets), as
    // the live agent declares their types.
    let meta = prom.api("/api/v1/metadata");
    for (title, expr) in &queries {
        for m in rated_metrics(expr) {
            let base = m.strip_suffix("_bucket").unwrap_or(&m);
            let ty = meta[base][0]["type"].as_str().unwrap_or("unknown");
            assert!(
                ["counter", "histogram"].contains(&ty),
                "panel {title:?}: rate/increase of {m}, a {ty}"
            );
        }
    }
    let checked = queries.len();
    assert!(checked >= 20, "{checked} dashboard queries checked");
    // The template variables resolve.
    let servers = prom.api(&format!(
        "/api/v1/label/server/values?match[]={}",
        encode("mcpwatch_events_total")
    ));
    assert!(servers.as_array().unwrap().iter().any(|s| s == "promsrv"), "{servers}");
    let instances = prom.api(&format!(
        "/api/v1/label/instance/values?match[]={}",
        encode("mcpwatch_build_info")
    ));
    assert_eq!(instances.as_array().unwrap().len(), 1, "{instances}");

    // Every metric the rules use is exported, every rule evaluates.
    let rule_count = rule_exprs().len();
    for (name, expr) in rule_exprs() {
        for m in metric_names(&expr) {
            assert!(exported(&m), "rule {name}: {m} not exported");
        }
        prom.query(&expr);
    }
    wait_for(
        "the rules evaluated healthy",
        Duration::from_secs(20),
        || {
            let groups = prom.api("/api/v1/rules");
            let rules: Vec<Value> = groups["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            (rules.len() == rule_count && rules.iter().all(|r| r["health"] == "ok")).then_some(())
        },
        &prom_log,
    );
    // The first high alert (the SSH key) fires, with its own severity; the
    // agent is up and the test alerts are info: nothing else fires.
    wait_for(
        "McpwatchHighSeverityAlert firing for the first cred.ssh",
        Duration::from_secs(20),
        || {
            let firing = prom.api("/api/v1/alerts");
            firing["alerts"]
                .as_array()?
                .iter()
                .any(|a| {
                    a["state"] == "firing"
                        && a["labels"]["alertname"] == "McpwatchHighSeverityAlert"
                        && a["labels"]["rule"] == "cred.ssh"
                        && a["labels"]["server"] == "promsrv"
                        && a["labels"]["severity"] == "high"
                        && a["labels"]["route"] == "page"
                })
                .then_some(())
        },
        &prom_log,
    );
    let firing = prom.api("/api/v1/alerts");
    for a in firing["alerts"].as_array().unwrap() {
        assert_eq!(a["labels"]["alertname"], "McpwatchHighSeverityAlert", "{firing}");
        assert!(
            ["high", "critical"].contains(&a["labels"]["severity"].as_str().unwrap_or("")),
            "{firing}"
        );
    }

    let _ = server.0.kill();
    let _ = server.0.wait();
    // Nothing watched any more: the server's gauge stays, at 0.
    wait_for(
        "the watched gauge of the exited server at 0",
        Duration::from_secs(20),
        || {
            let text = http_get(&addr, "/metrics").ok()?.1;
            text.contains("mcpwatch_watched_processes{server=\"promsrv\"} 0")
                .then_some(())
        },
        || http_get(&addr, "/metrics").map(|r| r.1).unwrap_or_default(),
    );
    agent.stop();
}
