//! Prometheus metrics: one registry, every family prefixed `mcpwatch_`
//! except the standard `process_*` families of the agent itself.
//!
//! Labels stay bounded: server names, event kinds, rule ids, severities, sink
//! names and tool names, never a pid or a path. Server and tool names come
//! from users (the wrapper's `--server`, MCP `tools/list`), so the number of
//! distinct values is capped; past the cap they are counted as `other`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

mod resolver;

pub use resolver::ResolverMetrics;

use crate::alerts::rules;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Distinct server names kept as label values.
const MAX_SERVERS: usize = 256;
/// Distinct (server, tool) pairs kept as label values.
const MAX_TOOLS: usize = 1024;
/// Label value for everything past a cap, and for alerts of no server.
pub const OTHER: &str = "other";
pub const NO_SERVER: &str = "-";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
}

/// The agent's metrics. Cheap to clone; shared by the event loop, the sink
/// tasks and the HTTP endpoint.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    events: IntCounterVec,
    alerts: IntCounterVec,
    enforcement: IntCounterVec,
    enforce_layers: IntGaugeVec,
    lost: IntCounterVec,
    probe_errors: IntCounterVec,
    tool_calls: IntCounterVec,
    gate: super::gate_metrics::GateFamilies,
    watched_processes: IntGaugeVec,
    watched_servers: IntGauge,
    alert_latency: Histogram,
    sink: SinkFamilies,
    decode_errors: IntCounter,
    events_dropped: IntCounter,
    mcp: McpFamilies,
    resolver: resolver::ResolverFamilies,
    servers: Arc<Mutex<HashSet<String>>>,
    tools: Arc<Mutex<HashSet<(String, String)>>>,
}

#[derive(Clone)]
struct SinkFamilies {
    delivered: IntCounterVec,
    retried: IntCounterVec,
    spooled: IntCounterVec,
    dropped: IntCounterVec,
    lines_dropped: IntCounterVec,
    spool_errors: IntCounterVec,
    dead_lettered: IntCounterVec,
    backlog: IntGaugeVec,
    spool_bytes: IntGaugeVec,
}

/// What the MCP layer made of the captured conversations.
#[derive(Clone)]
struct McpFamilies {
    messages: IntCounter,
    garbage: IntCounter,
    cut: IntCounter,
    lost_bytes: IntCounter,
    calls_in_flight: IntGauge,
    buffered_bytes: IntGauge,
}

/// The MCP layer's running totals, as the metrics export them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct McpTotals {
    pub messages: u64,
    pub garbage: u64,
    pub cut: u64,
    pub lost_bytes: u64,
    pub calls_in_flight: u64,
    pub buffered_bytes: u64,
}

/// One sink's counters, handed to its task.
#[derive(Clone)]
pub struct SinkMetrics {
    pub delivered: IntCounter,
    pub retried: IntCounter,
    pub spooled: IntCounter,
    pub dropped: IntCounter,
    /// Event lines (`level` summary or all) lost: never counted as alerts.
    pub lines_dropped: IntCounter,
    pub spool_errors: IntCounter,
    pub dead_lettered: IntCounter,
    pub backlog: IntGauge,
    pub spool_bytes: IntGauge,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let events = counter_vec(
            &r,
            "mcpwatch_events_total",
            "Events reported, by server and kind",
            &["server", "kind"],
        )?;
        let alerts = counter_vec(
            &r,
            "mcpwatch_alerts_total",
            "Alerts raised, by server, rule and severity",
            &["server", "rule", "severity"],
        )?;
        let enforcement = counter_vec(
            &r,
            "mcpwatch_enforce_total",
            "Operations an enforcement layer denied (outcome denied) or would have denied in audit mode \
             (outcome would_block), by server and layer",
            &["server", "layer", "outcome"],
        )?;
        let enforce_layers = gauge_vec(
            &r,
            "mcpwatch_enforce_layer_enforced",
            "Whether this kernel enforces a layer (1) or not (0): landlock, seccomp, cgroup, kill",
            &["layer"],
        )?;
        let lost = counter_vec(
            &r,
            "mcpwatch_ringbuf_lost_events_total",
            "Events lost in the kernel (ring buffer full), by server and kind",
            &["server", "kind"],
        )?;
        let probe_errors = counter_vec(
            &r,
            "mcpwatch_probe_errors_total",
            "Times a kernel probe gave up (unreadable argument, map full...), by probe and reason",
            &["probe", "reason"],
        )?;
        let tool_calls = counter_vec(
            &r,
            "mcpwatch_tool_calls_total",
            "MCP tool calls seen, by server and tool",
            &["server", "tool"],
        )?;
        let watched_processes = gauge_vec(
            &r,
            "mcpwatch_watched_processes",
            "Processes watched in the kernel, by server",
            &["server"],
        )?;
        let watched_servers = IntGauge::new("mcpwatch_watched_servers", "Servers with at least one watched process")?;
        r.register(Box::new(watched_servers.clone()))?;
        let gate = super::gate_metrics::GateFamilies::new(&r)?;
        let alert_latency = Histogram::with_opts(
            HistogramOpts::new(
                "mcpwatch_alert_latency_seconds",
                "From the kernel timestamp of the triggering event to the alert handed to the sinks",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        r.register(Box::new(alert_latency.clone()))?;
        let sink = SinkFamilies {
            delivered: counter_vec(
                &r,
                "mcpwatch_sink_alerts_delivered_total",
                "Alerts a sink accepted",
                &["sink"],
            )?,
            retried: counter_vec(
                &r,
                "mcpwatch_sink_alerts_retried_total",
                "Failed delivery attempts that will be retried",
                &["sink"],
            )?,
            spooled: counter_vec(
                &r,
                "mcpwatch_sink_alerts_spooled_total",
                "Alerts that had to wait in the spool (sink down, slow or backlogged)",
                &["sink"],
            )?,
            dropped: counter_vec(
                &r,
                "mcpwatch_sink_alerts_dropped_total",
                "Alerts lost for a sink (spool full, or the spool could not be written)",
                &["sink"],
            )?,
            lines_dropped: counter_vec(
                &r,
                "mcpwatch_sink_lines_dropped_total",
                "Event lines (sink level summary or all) lost for a sink: its queue or spool past the share kept for alerts, or refused",
                &["sink"],
            )?,
            spool_errors: counter_vec(
                &r,
                "mcpwatch_sink_spool_errors_total",
                "Spool writes that failed (full disk...)",
                &["sink"],
            )?,
            dead_lettered: counter_vec(
                &r,
                "mcpwatch_sink_alerts_dead_lettered_total",
                "Alerts the receiver refused for good (a 4xx other than 429 for the item), moved to the sink's dead-letter file",
                &["sink"],
            )?,
            backlog: gauge_vec(
                &r,
                "mcpwatch_sink_backlog_alerts",
                "Alerts waiting for a sink",
                &["sink"],
            )?,
            spool_bytes: gauge_vec(
                &r,
                "mcpwatch_sink_spool_bytes",
                "Bytes waiting in a sink's spool",
                &["sink"],
            )?,
        };
        // The agent's own CPU, memory, fds and threads under the names every
        // Prometheus user knows (process_cpu_seconds_total...), read at scrape time.
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        let decode_errors = IntCounter::new(
            "mcpwatch_decode_errors_total",
            "Kernel records that could not be decoded",
        )?;
        r.register(Box::new(decode_errors.clone()))?;
        let events_dropped = IntCounter::new(
            "mcpwatch_events_dropped_total",
            "Event lines that could not be written to the events output (full disk, closed pipe)",
        )?;
        r.register(Box::new(events_dropped.clone()))?;
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, MetricsError> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let mcp = McpFamilies {
            messages: counter(
                "mcpwatch_mcp_messages_total",
                "JSON-RPC messages read from servers' stdio",
            )?,
            garbage: counter(
                "mcpwatch_mcp_garbage_lines_total",
                "Lines on servers' stdio that were not JSON-RPC",
            )?,
            cut: counter(
                "mcpwatch_mcp_cut_messages_total",
                "Messages cut by a capture gap or over the size limit",
            )?,
            lost_bytes: counter(
                "mcpwatch_mcp_lost_bytes_total",
                "Bytes of servers' stdio the capture lost inside messages",
            )?,
            calls_in_flight: gauge("mcpwatch_mcp_calls_in_flight", "Tool calls waiting for their result")?,
            buffered_bytes: gauge(
                "mcpwatch_mcp_buffered_bytes",
                "Bytes of unfinished messages held for reassembly",
            )?,
        };
        let build = IntGaugeVec::new(
            Opts::new("mcpwatch_build_info", "The agent's version (always 1)"),
            &["version", "kernel"],
        )?;
        r.register(Box::new(build.clone()))?;
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel.as_str()])
            .set(1);
        let resolver = resolver::ResolverFamilies::new(&r)?;
        let m = Self {
            enforcement,
            enforce_layers,
            registry: r,
            events,
            alerts,
            lost,
            probe_errors,
            tool_calls,
            gate,
            watched_processes,
            watched_servers,
            alert_latency,
            sink,
            decode_errors,
            events_dropped,
            mcp,
            resolver,
            servers: Arc::default(),
            tools: Arc::default(),
        };
        // The agent's own alerts (loss, sink overflow...) belong to no server.
        m.zero_alerts(NO_SERVER);
        Ok(m)
    }

    /// The label value for a server name: itself while under the cap.
    fn server_label(&self, server: Option<&str>) -> String {
        let Some(s) = server else { return NO_SERVER.into() };
        let mut seen = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(s) {
            return s.to_owned();
        }
        if seen.len() >= MAX_SERVERS {
            return OTHER.into();
        }
        seen.insert(s.to_owned());
        s.to_owned()
    }

    /// A server appeared: its loss, event and alert counters and its
    /// watched-process gauge start at 0, so that dashboards see the series
    /// before anything happens and `increase()` sees the first alert (a
    /// series born at 1 has no earlier sample to increase from).
    pub fn server_seen(&self, server: &str, kinds: &[&str]) {
        let s = self.server_label(Some(server));
        for &k in kinds {
            self.lost.with_label_values(&[s.as_str(), k]);
            self.events.with_label_values(&[s.as_str(), k]);
        }
        self.zero_alerts(&s);
        self.watched_processes.with_label_values(&[s.as_str()]);
    }

    /// One `mcpwatch_alerts_total` series at 0 per rule of the catalogue,
    /// at the severity its alerts carry.
    fn zero_alerts(&self, server_label: &str) {
        for r in rules::ALL {
            self.alerts
                .with_label_values(&[server_label, r.id, r.severity.as_str()]);
        }
    }

    pub fn event(&self, server: Option<&str>, kind: &str) {
        self.event_counter(server, kind).inc();
    }

    /// The `mcpwatch_events_total` child of (server, kind), for callers that
    /// count many events of the same pair.
    pub fn event_counter(&self, server: Option<&str>, kind: &str) -> prometheus::IntCounter {
        let s = self.server_label(server);
        self.events.with_label_values(&[s.as_str(), kind])
    }

    /// Brings the MCP families up to the MCP layer's totals.
    pub fn mcp(&self, t: McpTotals) {
        let m = &self.mcp;
        for (c, total) in [
            (&m.messages, t.messages),
            (&m.garbage, t.garbage),
            (&m.cut, t.cut),
            (&m.lost_bytes, t.lost_bytes),
        ] {
            c.inc_by(total.saturating_sub(c.get()));
        }
        m.calls_in_flight.set(t.calls_in_flight as i64);
        m.buffered_bytes.set(t.buffered_bytes as i64);
    }

    pub fn decode_error(&self) {
        self.decode_errors.inc();
    }

    pub fn events_dropped(&self, n: u64) {
        self.events_dropped.inc_by(n);
    }

    pub fn lost(&self, server: Option<&str>, kind: &str, n: u64) {
        let s = self.server_label(server);
        self.lost.with_label_values(&[s.as_str(), kind]).inc_by(n);
    }

    /// `n` more times `probe` gave up for `reason` in the kernel
    /// (`kernel::probe_errors`). Both labels come from fixed tables.
    pub fn probe_errors(&self, probe: &str, reason: &str, n: u64) {
        self.probe_errors.with_label_values(&[probe, reason]).inc_by(n);
    }

    /// An alert handed to the sinks; `latency_s` since its triggering event.
    pub fn alert(&self, server: Option<&str>, rule: &str, severity: &str, latency_s: f64) {
        let s = self.server_label(server);
        self.alerts.with_label_values(&[s.as_str(), rule, severity]).inc();
        self.alert_latency.observe(latency_s);
    }

    /// An operation a layer denied, or would have in audit mode.
    pub fn enforcement(&self, server: Option<&str>, layer: &str, denied: bool) {
        let s = self.server_label(server);
        let outcome = if denied { "denied" } else { "would_block" };
        self.enforcement.with_label_values(&[s.as_str(), layer, outcome]).inc();
    }

    /// Whether this kernel enforces `layer` (start-up).
    pub fn enforce_layer(&self, layer: &str, enforced: bool) {
        self.enforce_layers.with_label_values(&[layer]).set(i64::from(enforced));
    }

    /// The series of `server`'s DNS resolver (its cgroup layer), born at 0.
    pub fn resolver(&self, server: &str) -> ResolverMetrics {
        self.resolver.server(&self.server_label(Some(server)))
    }

    /// An MCP tool call of `server` (for the protocol capture stage).
    pub fn tool_call(&self, server: &str, tool: &str) {
        let (s, tool) = self.tool_labels(server, tool);
        self.tool_calls.with_label_values(&[s.as_str(), tool]).inc();
    }

    /// A `tools/call` the gate of `server` judged, and the time it added.
    pub fn gate_decision(&self, server: &str, tool: &str, outcome: &str, added_s: f64) {
        let (s, tool) = self.tool_labels(server, tool);
        self.gate
            .decisions
            .with_label_values(&[s.as_str(), tool, outcome])
            .inc();
        self.gate
            .added_latency
            .with_label_values(&[s.as_str(), tool])
            .observe(added_s);
    }

    /// The server and tool label values, under their caps.
    fn tool_labels<'a>(&self, server: &str, tool: &'a str) -> (String, &'a str) {
        let s = self.server_label(Some(server));
        let key = (s.clone(), tool.to_owned());
        let mut seen = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&key) || seen.len() < MAX_TOOLS {
            seen.insert(key);
            (s, tool)
        } else {
            (s, OTHER)
        }
    }

    /// The watched set now: processes per server. A server seen before and
    /// not in the set now is at 0 (its series stays until it is forgotten).
    pub fn watched(&self, per_server: &[(&str, usize)]) {
        let mut now: HashMap<String, i64> = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| (s.clone(), 0))
            .collect();
        for (server, n) in per_server {
            *now.entry(self.server_label(Some(server))).or_default() += *n as i64;
        }
        for (s, n) in now {
            self.watched_processes.with_label_values(&[s.as_str()]).set(n);
        }
        self.watched_servers.set(per_server.len() as i64);
    }

    /// A server was forgotten (its processes all exited a while ago): every
    /// series labelled with its name is removed, and its place under the
    /// label cap is freed. A server counted as `other` has no series of its own.
    pub fn forget_server(&self, server: &str) {
        if !self.servers.lock().unwrap_or_else(|e| e.into_inner()).remove(server) {
            return;
        }
        self.tools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(s, _)| s != server);
        forget_series(&self.events, server);
        forget_series(&self.alerts, server);
        forget_series(&self.lost, server);
        forget_series(&self.tool_calls, server);
        forget_series(&self.gate.decisions, server);
        forget_series(&self.gate.added_latency, server);
        forget_series(&self.watched_processes, server);
        forget_series(&self.enforcement, server);
        self.resolver.forget(server);
    }

    /// A sink's counters, created at 0 (a quiet sink still has series).
    pub fn sink(&self, name: &str) -> SinkMetrics {
        let l = [name];
        SinkMetrics {
            delivered: self.sink.delivered.with_label_values(&l),
            retried: self.sink.retried.with_label_values(&l),
            spooled: self.sink.spooled.with_label_values(&l),
            dropped: self.sink.dropped.with_label_values(&l),
            lines_dropped: self.sink.lines_dropped.with_label_values(&l),
            spool_errors: self.sink.spool_errors.with_label_values(&l),
            dead_lettered: self.sink.dead_lettered.with_label_values(&l),
            backlog: self.sink.backlog.with_label_values(&l),
            spool_bytes: self.sink.spool_bytes.with_label_values(&l),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("encoding metrics: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The series of one family (`mcpwatch_tool_calls_total`...): labels
    /// and value, for `mcpwatch top`'s snapshot.
    pub fn samples(&self, family: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let mut out = Vec::new();
        for f in self.registry.gather().iter().filter(|f| f.name() == family) {
            for m in f.get_metric() {
                let labels = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_owned(), l.value().to_owned()));
                let v = match f.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    prometheus::proto::MetricType::GAUGE => m.get_gauge().get_value(),
                    _ => continue,
                };
                out.push((labels.collect(), v));
            }
        }
        out
    }
}

/// Removes every series of `vec` whose `server` label is `server`.
fn forget_series<T: prometheus::core::MetricVecBuilder>(vec: &prometheus::core::MetricVec<T>, server: &str) {
    use prometheus::core::Collector;
    for family in vec.collect() {
        for m in family.get_metric() {
            let labels: std::collections::HashMap<&str, &str> =
                m.get_label().iter().map(|l| (l.name(), l.value())).collect();
            if labels.get("server") == Some(&server) {
                // Listed a moment ago: it exists.
                let _ = vec.remove(&labels);
            }
        }
    }
}

#[cfg(test)]
mod tests;
