//! Alert sinks: every configured destination gets every alert, in order,
//! without ever blocking the event loop.
//!
//! Each sink runs in a task of its own behind a bounded queue. The task
//! appends what arrives to the sink's on-disk [`spool::Spool`] at once and
//! delivers from the spool's head, removing an alert only once the sink
//! accepted it; failures are retried with capped exponential backoff with
//! full jitter ([`backoff`]). A sink that is
//! down or slow therefore costs disk, and what it missed is replayed in order
//! when it comes back (or when the agent restarts).
//!
//! Sinks do not share fate: the spools of all sinks usually live on one
//! filesystem, so when a spool cannot be written (that filesystem is full,
//! often because another sink is down) the alert waits in a bounded queue in
//! the sink's own memory instead, and a healthy sink keeps delivering. Only
//! when both are full is an alert dropped, logged and counted; the drops are
//! folded into one `agent.sink_overflow` alert per interval telling how many
//! were lost, queued as soon as there is room again.
//!
//! A sink at `level = "summary"` also gets the lines of the events file's
//! `summary` level ([`record::SinkRecord::Line`]), through the same queue
//! and spool; their drops are counted with the alerts'.

pub mod backoff;
pub mod file;
pub mod record;
pub mod spool;
pub mod syslog;
pub mod webhook;
mod worker;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    alerts::{Alert, AlertFactory},
    config::{Config, SinkConfig, SinkKind, SinkLevel},
    output::{
        events::Record,
        metrics::{Metrics, SinkMetrics},
        summary::Summaries,
    },
};
use record::SinkRecord;
use spool::{Spool, SpoolError};
use webhook::Item;
use worker::Worker;

/// Alerts waiting between the event loop and a sink task (the task only moves
/// them to disk, so this fills only if the disk stalls).
const QUEUE: usize = 4096;
/// At shutdown, how long a healthy sink may keep delivering its backlog.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Alerts a sink holds in memory while its spool cannot be written.
const MEMORY: usize = 1024;
/// Alerts a receiver refused for good, in the sink's spool directory.
pub const DEAD_LETTER: &str = "dead-letter.jsonl";
/// The dead-letter file's cap; beyond it refused alerts are dropped (counted).
pub const DEAD_LETTER_MAX_BYTES: u64 = 64 << 20;
/// At most one `agent.sink_overflow` alert per sink per interval.
const OVERFLOW_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink `{name}`: {source}")]
    Spool {
        name: String,
        #[source]
        source: SpoolError,
    },
    #[error("sink `{name}`: {source}")]
    Webhook {
        name: String,
        #[source]
        source: webhook::WebhookError,
    },
    #[error("sink `{0}`: no destination configured")]
    NoDestination(String),
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Webhook(#[from] webhook::WebhookError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the receiver refused an item for now: {0}")]
    Item(String),
}

enum Destination {
    File(file::FileSink, crate::config::Schema),
    Syslog(syslog::SyslogSink),
    Webhook(Box<webhook::WebhookSink>),
}

impl Destination {
    fn new(cfg: &SinkConfig) -> Result<Self, SinkError> {
        Ok(match cfg.kind() {
            Some(SinkKind::File(f)) => Destination::File(file::FileSink::new(f), f.schema),
            Some(SinkKind::Syslog(s)) => Destination::Syslog(syslog::SyslogSink::new(s)),
            Some(SinkKind::Webhook(w)) => Destination::Webhook(Box::new(
                webhook::WebhookSink::new(w, cfg.retry.timeout()).map_err(|source| SinkError::Webhook {
                    name: cfg.name.clone(),
                    source,
                })?,
            )),
            None => return Err(SinkError::NoDestination(cfg.name.clone())),
        })
    }

    /// Alerts per attempt at most: (count, spooled bytes).
    fn batch(&self) -> (usize, usize) {
        match self {
            Destination::Webhook(w) if w.format().batches() => (w.batch().max_events, w.batch().max_bytes),
            _ => (1, usize::MAX),
        }
    }

    /// Delivers `records` (at most `batch()` of them): what became of each
    /// when the receiver answered.
    async fn deliver(&mut self, records: &[SinkRecord]) -> Result<Vec<Item>, DeliveryError> {
        let mut items = Vec::with_capacity(records.len());
        for rec in records {
            let res = match self {
                Destination::File(f, schema) => f.deliver(rec, *schema).map_err(DeliveryError::from),
                Destination::Syslog(s) => s.deliver(rec).await.map_err(DeliveryError::from),
                Destination::Webhook(w) => return Ok(w.deliver(records).await?),
            };
            match res {
                Ok(()) => items.push(Item::Accepted),
                Err(e) if items.is_empty() => return Err(e),
                Err(e) => {
                    items.push(Item::Retry(e.to_string()));
                    break;
                }
            }
        }
        Ok(items)
    }
}

/// What became of one alert at one sink: delivered, or why not.
pub type Outcome = Result<(), String>;

/// Alerts someone waits on (`mcpwatch test-alert`), by id: the sink's task
/// answers once the alert is delivered, refused, or its first attempt failed.
#[derive(Clone, Default)]
pub(crate) struct Tracked(Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>);

impl Tracked {
    fn add(&self, id: &str) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), tx);
        rx
    }

    /// Answers whoever waits on `id` (nobody, for almost every alert).
    pub(crate) fn settle(&self, id: &str, outcome: Outcome) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.is_empty() {
            return;
        }
        if let Some(tx) = m.remove(id) {
            let _ = tx.send(outcome);
        }
    }
}

struct Handle {
    name: String,
    tracked: Tracked,
    tx: mpsc::Sender<Arc<SinkRecord>>,
    level: SinkLevel,
    metrics: SinkMetrics,
    task: JoinHandle<()>,
}

/// The running sinks.
#[derive(Default)]
pub struct Sinks {
    sinks: Vec<Handle>,
    /// The `summary` level's open summaries, when a sink is at that level.
    summaries: Option<Summaries>,
    /// A sink is at `all`.
    firehose: bool,
}

impl Sinks {
    /// Opens every sink's spool (replaying what a previous run left) and
    /// starts its task. Must run inside the tokio runtime.
    pub fn start(config: &Config, metrics: &Metrics, factory: &AlertFactory) -> Result<Self, SinkError> {
        let spool_dir = config.spool_dir();
        let mut sinks = Vec::new();
        for cfg in &config.sinks {
            let dest = Destination::new(cfg)?;
            let spool = Spool::open(&spool_dir.join(&cfg.name), cfg.spool).map_err(|source| SinkError::Spool {
                name: cfg.name.clone(),
                source,
            })?;
            let m = metrics.sink(&cfg.name);
            if !spool.is_empty() {
                log::info!(
                    "sink {}: {} alerts left in {} from a previous run, replaying",
                    cfg.name,
                    spool.len(),
                    spool.dir().display()
                );
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let tracked = Tracked::default();
            let worker = Worker {
                tracked: tracked.clone(),
                name: cfg.name.clone(),
                spool,
                retry: cfg.retry,
                m: m.clone(),
                memory: VecDeque::new(),
                overflow: 0,
                overflow_at: None,
                failing: false,
                factory: factory.clone(),
            };
            log::info!("sink {} started", cfg.name);
            sinks.push(Handle {
                name: cfg.name.clone(),
                tracked,
                tx,
                level: cfg.level,
                metrics: m,
                task: tokio::spawn(worker.run(dest, rx)),
            });
        }
        let summaries = sinks
            .iter()
            .any(|s| s.level == SinkLevel::Summary)
            .then(Summaries::default);
        let firehose = sinks.iter().any(|s| s.level == SinkLevel::All);
        Ok(Self {
            sinks,
            summaries,
            firehose,
        })
    }

    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Hands an alert to every sink; never waits.
    /// Free places in the fullest sink queue (`QUEUE` with no sink). A sink
    /// whose task is gone takes nothing any more: it does not hold the loop.
    pub fn room(&self) -> usize {
        self.sinks
            .iter()
            .filter(|s| !s.tx.is_closed())
            .map(|s| s.tx.capacity())
            .min()
            .unwrap_or(QUEUE)
    }

    /// Alerts each sink dropped since it started (queue, spool and memory
    /// full): the agent folds them into its loss alert, which reaches the
    /// sinks that are healthy.
    pub fn dropped(&self) -> Vec<(String, u64)> {
        self.sinks
            .iter()
            .map(|s| (s.name.clone(), s.metrics.dropped.get()))
            .collect()
    }

    /// Before [`Sinks::send`]: per sink, its name and where it will say what
    /// became of alert `id`.
    pub fn track(&self, id: &str) -> Vec<(String, oneshot::Receiver<Outcome>)> {
        self.sinks.iter().map(|s| (s.name.clone(), s.tracked.add(id))).collect()
    }

    pub fn send(&self, alert: &Alert) {
        if self.sinks.is_empty() {
            return;
        }
        self.queue(SinkRecord::from(alert.clone()), |_| true);
    }

    /// Whether some sink takes event lines (level `summary` or `all`): when
    /// none does and the events file is at `alerts`, callers need not build
    /// a syscall's line.
    pub fn wants_activity(&self) -> bool {
        self.firehose || self.summaries.is_some()
    }

    /// Hands an event line to the sinks at `level = "all"` as it is, and to
    /// those at `summary` what that level makes of it (nothing, the line,
    /// the line with what its call touched, activity lines), as the events
    /// file does; never waits.
    pub fn event(&mut self, r: &Record<'_>) {
        if self.firehose
            && let Ok(line) = serde_json::to_value(r)
        {
            self.queue(SinkRecord::Line(line), |level| level == SinkLevel::All);
        }
        let Some(summaries) = &mut self.summaries else {
            return;
        };
        for line in summaries.lines(r) {
            self.queue(SinkRecord::Line(line), |level| level == SinkLevel::Summary);
        }
    }

    /// Event lines take the queue up to three quarters: the rest is kept
    /// for alerts, which a firehose (`all`) must not crowd out.
    fn queue(&self, rec: SinkRecord, wants: impl Fn(SinkLevel) -> bool) {
        let rec = Arc::new(rec);
        for s in self.sinks.iter().filter(|s| wants(s.level)) {
            let res = match rec.alert_id() {
                None if s.tx.capacity() <= QUEUE / 4 => Err("past the lines' share".to_owned()),
                _ => s.tx.try_send(rec.clone()).map_err(|e| e.to_string()),
            };
            let Err(e) = res else { continue };
            let dropped = match rec.alert_id() {
                Some(id) => {
                    s.tracked.settle(id, Err(format!("dropped: queue {e}")));
                    &s.metrics.dropped
                }
                None => &s.metrics.lines_dropped,
            };
            dropped.inc();
            // Logged at powers of two: a firehose must not flood the log.
            let n = dropped.get();
            if n.is_power_of_two() {
                log::error!(
                    "sink {}: {} dropped: queue {e} ({n} dropped so far)",
                    s.name,
                    rec.label()
                );
            }
        }
    }

    /// Closes the queues and lets each task move what is queued to its spool
    /// (and deliver it, for a healthy sink, for a short while).
    pub async fn shutdown(self) {
        // Close every queue first: the sinks wind down together.
        let tasks: Vec<(String, JoinHandle<()>)> = self.sinks.into_iter().map(|s| (s.name, s.task)).collect();
        let deadline = Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(1);
        for (name, task) in tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                log::warn!("sink {name}: still busy at shutdown; its spool keeps the rest");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileSinkConfig, RetryConfig, SpoolConfig};
    use crate::output::events::Clock;
    use crate::output::format::ecs;

    /// One file sink `f` writing to `path`, its spool under `base`.
    fn file_sink(base: &std::path::Path, path: &std::path::Path, level: SinkLevel) -> Config {
        Config {
            spool_dir: Some(base.join("spool")),
            sinks: vec![SinkConfig {
                name: "f".into(),
                level,
                spool: SpoolConfig::default(),
                retry: RetryConfig::default(),
                file: Some(FileSinkConfig {
                    path: path.to_owned(),
                    rotate_bytes: 0,
                    keep: 1,
                    schema: Default::default(),
                }),
                syslog: None,
                webhook: None,
            }],
            ..Config::default()
        }
    }

    /// A spool left by an agent from before sink levels (plain alerts, one
    /// a line) is replayed in order by a sink at `summary`, whose own event
    /// lines go after it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_spool_of_plain_alerts_replays_before_new_lines() {
        let base = std::env::temp_dir().join(format!("mcpwatch-sinks-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let cfg = file_sink(&base, &base.join("alerts.jsonl"), SinkLevel::Summary);
        let mut old = Spool::open(&base.join("spool/f"), SpoolConfig::default()).unwrap();
        for i in 0..3 {
            let a = crate::alerts::test_alert(format!("1-{i}"), "2026-11-21T17:00:00Z".into(), 1, 1);
            old.push(&serde_json::to_vec(&a).unwrap()).unwrap();
        }
        drop(old);
        let metrics = Metrics::new().unwrap();
        let mut sinks = Sinks::start(&cfg, &metrics, &AlertFactory::new(Clock::new())).unwrap();
        sinks.event(&Record {
            ts: "2026-11-21T17:00:01Z".into(),
            kind: "tool_call",
            server: Some("fs"),
            tool: Some("read_file"),
            call_id: Some("4"),
            ..Default::default()
        });
        let m = metrics.sink("f");
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.delivered.get() < 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sinks.shutdown().await;
        let got: Vec<String> = std::fs::read_to_string(base.join("alerts.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{}:{}",
                    v["event"]["kind"].as_str().unwrap(),
                    v["event"]["id"].as_str().unwrap_or("-")
                )
            })
            .collect();
        assert_eq!(got, ["alert:1-0", "alert:1-1", "alert:1-2", "event:-"]);
        let _ = std::fs::remove_dir_all(&base);
    }

    /// One session's lines reach each sink as its level says: every line at
    /// `all`, the summary (the file folded into the call's line) at
    /// `summary`, none at `alerts`.
    #[tokio::test(flavor = "current_thread")]
    async fn each_sink_gets_the_lines_of_its_level() {
        let base = std::env::temp_dir().join(format!("mcpwatch-sinks-levels-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let levels = [
            ("all", SinkLevel::All),
            ("summary", SinkLevel::Summary),
            ("alerts", SinkLevel::Alerts),
        ];
        let mut cfg = file_sink(&base, &base.join("x"), SinkLevel::Alerts);
        cfg.sinks = levels
            .iter()
            .map(|(name, level)| {
                let mut s = file_sink(&base, &base.join(format!("{name}.jsonl")), *level)
                    .sinks
                    .remove(0);
                s.name = (*name).into();
                s
            })
            .collect();
        let metrics = Metrics::new().unwrap();
        let mut sinks = Sinks::start(&cfg, &metrics, &AlertFactory::new(Clock::new())).unwrap();
        let rec = |kind, call_id: Option<&'static str>, path: Option<&'static str>| Record {
            ts: "2026-11-21T17:00:01Z".into(),
            kind,
            server: Some("fs"),
            pid: 7,
            tool: call_id.map(|_| "read_file"),
            call_id,
            path,
            ..Default::default()
        };
        sinks.event(&rec("watch", None, None));
        sinks.event(&rec("file", Some("4"), Some("/srv/a")));
        sinks.event(&rec("tool_call", Some("4"), None));
        sinks.shutdown().await;
        let lines = |name: &str| -> Vec<String> {
            std::fs::read_to_string(base.join(format!("{name}.jsonl")))
                .unwrap_or_default()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    let touched = &v["mcpwatch"]["touched"];
                    let files = touched["files"]["count"]
                        .as_u64()
                        .map(|n| format!(" {n} file"))
                        .unwrap_or_default();
                    format!("{}{files}", v["event"]["action"].as_str().unwrap())
                })
                .collect()
        };
        assert_eq!(lines("all"), ["watch", "file", "tool_call"]);
        assert_eq!(lines("summary"), ["watch", "tool_call 1 file"]);
        assert!(lines("alerts").is_empty());
        let _ = std::fs::remove_dir_all(&base);
    }

    /// A firehose cannot crowd alerts out: with the receiver down, lines
    /// stop at three quarters of the spool (counted apart) and the alerts
    /// after them still fit, none dropped.
    #[tokio::test(flavor = "current_thread")]
    async fn lines_leave_a_full_sinks_room_to_alerts() {
        let base = std::env::temp_dir().join(format!("mcpwatch-sinks-share-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mut cfg = file_sink(&base, &base.join("missing/all.jsonl"), SinkLevel::All);
        cfg.sinks[0].spool.max_alerts = 8;
        let metrics = Metrics::new().unwrap();
        let mut sinks = Sinks::start(&cfg, &metrics, &AlertFactory::new(Clock::new())).unwrap();
        for _ in 0..20 {
            sinks.event(&Record {
                kind: "file",
                server: Some("fs"),
                ..Default::default()
            });
        }
        for i in 0..4 {
            sinks.send(&crate::alerts::test_alert(
                format!("1-{i}"),
                "2026-11-21T17:00:00Z".into(),
                1,
                1,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = metrics.sink("f");
        assert_eq!((m.lines_dropped.get(), m.dropped.get()), (14, 0));
        assert_eq!(m.backlog.get(), 10, "6 lines and 4 alerts wait");
        sinks.shutdown().await;
        let _ = std::fs::remove_dir_all(&base);
    }

    /// A file sink whose directory is missing fails; alerts wait in the
    /// spool, then in memory, overflow is counted and reported once, and
    /// everything kept arrives in order once the directory exists.
    #[tokio::test(flavor = "current_thread")]
    async fn outage_spools_in_order_and_reports_overflow() {
        let base = std::env::temp_dir().join(format!("mcpwatch-sinks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let out_dir = base.join("out");
        let mut cfg = file_sink(&base, &out_dir.join("alerts.jsonl"), SinkLevel::Alerts);
        cfg.sinks[0].spool = SpoolConfig {
            max_alerts: 5,
            max_bytes: 1 << 20,
        };
        cfg.sinks[0].retry = RetryConfig {
            initial_backoff_ms: 20,
            max_backoff_ms: 50,
            timeout_ms: 1000,
        };
        let metrics = Metrics::new().unwrap();
        let sinks = Sinks::start(&cfg, &metrics, &AlertFactory::new(Clock::new())).unwrap();
        let alert = |i: usize| crate::alerts::test_alert(format!("1-{i}"), "2026-11-21T17:00:00Z".into(), 1, 1);
        // 5 fit the spool, MEMORY more the memory queue, 3 are dropped.
        let sent = 5 + MEMORY + 3;
        for i in 0..sent {
            sinks.send(&alert(i));
            if i % 64 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = metrics.sink("f");
        assert_eq!(m.dropped.get(), 3);
        assert!(m.retried.get() >= 1);
        assert_eq!(m.delivered.get(), 0);
        std::fs::create_dir_all(&out_dir).unwrap();
        // Room again: the next alert brings the one overflow report before it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while m.backlog.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sinks.send(&alert(sent));
        sinks.shutdown().await;
        let text = std::fs::read_to_string(out_dir.join("alerts.jsonl")).unwrap();
        let got: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let a = ecs::from_ecs(&v).unwrap();
                if a.rule == "agent.sink_overflow" {
                    format!("overflow:{}", a.count)
                } else {
                    a.id
                }
            })
            .collect();
        let mut want: Vec<String> = (0..5 + MEMORY).map(|i| format!("1-{i}")).collect();
        want.push("overflow:3".into());
        want.push(format!("1-{sent}"));
        assert_eq!(got, want);
        let _ = std::fs::remove_dir_all(&base);
    }
}
