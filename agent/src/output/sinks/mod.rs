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

pub mod backoff;
pub mod file;
pub mod spool;
pub mod syslog;
pub mod webhook;

use std::{collections::VecDeque, io::Write as _, os::unix::fs::OpenOptionsExt as _, sync::Arc, time::Duration};

use serde_json::json;
use tokio::{
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, sleep_until, timeout},
};

use crate::{
    alerts::{Alert, AlertFactory, rules},
    config::{Config, RetryConfig, SinkConfig, SinkKind},
    output::events::Clock,
    output::metrics::{Metrics, SinkMetrics},
};
use spool::{Spool, SpoolError};
use webhook::{Item, WebhookError};

/// Alerts waiting between the event loop and a sink task (the task only moves
/// them to disk, so this fills only if the disk stalls).
const QUEUE: usize = 4096;
/// At shutdown, how long a healthy sink may keep delivering its backlog.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Alerts a sink holds in memory while its spool cannot be written.
const MEMORY: usize = 1024;
/// Alerts a receiver refused for good, in the sink's spool directory.
pub const DEAD_LETTER: &str = "dead-letter.jsonl";
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
    File(file::FileSink),
    Syslog(syslog::SyslogSink),
    Webhook(Box<webhook::WebhookSink>),
}

impl Destination {
    fn new(cfg: &SinkConfig) -> Result<Self, SinkError> {
        Ok(match cfg.kind() {
            Some(SinkKind::File(f)) => Destination::File(file::FileSink::new(f)),
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

    /// Delivers `alerts` (at most `batch()` of them): what became of each
    /// alert when the receiver answered.
    async fn deliver(&mut self, alerts: &[Alert]) -> Result<Vec<Item>, DeliveryError> {
        let mut items = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let res = match self {
                Destination::File(f) => f.deliver(alert).map_err(DeliveryError::from),
                Destination::Syslog(s) => s.deliver(alert).await.map_err(DeliveryError::from),
                Destination::Webhook(w) => return Ok(w.deliver(alerts).await?),
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

struct Handle {
    name: String,
    tx: mpsc::Sender<Arc<Alert>>,
    metrics: SinkMetrics,
    task: JoinHandle<()>,
}

/// The running sinks.
#[derive(Default)]
pub struct Sinks {
    sinks: Vec<Handle>,
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
            let worker = Worker {
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
                tx,
                metrics: m,
                task: tokio::spawn(worker.run(dest, rx)),
            });
        }
        Ok(Self { sinks })
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

    pub fn send(&self, alert: &Alert) {
        if self.sinks.is_empty() {
            return;
        }
        let alert = Arc::new(alert.clone());
        for s in &self.sinks {
            if let Err(e) = s.tx.try_send(alert.clone()) {
                s.metrics.dropped.inc();
                log::error!("sink {}: alert {} dropped: queue {e}", s.name, alert.id);
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

struct Worker {
    name: String,
    spool: Spool,
    retry: RetryConfig,
    m: SinkMetrics,
    /// Alerts that came while the spool could not take them, newer than
    /// everything in the spool (while it holds any, arrivals queue here too).
    memory: VecDeque<Alert>,
    /// Alerts dropped since the last overflow report.
    overflow: u64,
    /// When the last overflow report was queued.
    overflow_at: Option<Instant>,
    /// The last delivery attempt failed.
    failing: bool,
    factory: AlertFactory,
}

impl Worker {
    async fn run(mut self, mut dest: Destination, mut rx: mpsc::Receiver<Arc<Alert>>) {
        let mut backoff = backoff::Backoff::new(
            Duration::from_millis(self.retry.initial_backoff_ms),
            Duration::from_millis(self.retry.max_backoff_ms),
        );
        let mut next_try = Instant::now();
        let mut closed_at: Option<Instant> = None;
        // Alerts still to send one at a time (a batch was refused whole).
        let mut isolate = 0usize;
        self.gauges();
        loop {
            if let Some(at) = closed_at
                && (self.is_empty() || self.failing || at.elapsed() > SHUTDOWN_GRACE)
            {
                break;
            }
            if self.is_empty() || Instant::now() < next_try {
                if closed_at.is_some() {
                    // Closing with a backlog and a backoff to wait: leave it on disk.
                    break;
                }
                let wake = if self.is_empty() { None } else { Some(next_try) };
                tokio::select! {
                    a = rx.recv() => match a {
                        Some(a) => self.intake(&a),
                        None => closed_at = Some(Instant::now()),
                    },
                    _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
                }
                continue;
            }
            // The spool holds the older alerts: memory only once it is empty.
            let from_spool = !self.spool.is_empty();
            let cap = if isolate > 0 { (1, usize::MAX) } else { dest.batch() };
            let (batch, lines) = if from_spool {
                match self.head(cap) {
                    Some(b) => b,
                    None => continue,
                }
            } else {
                (self.memory.iter().take(cap.0).cloned().collect(), Vec::new())
            };
            let attempt = timeout(self.retry.timeout(), dest.deliver(&batch));
            tokio::pin!(attempt);
            // Keep taking alerts in while a slow sink answers.
            let result = loop {
                tokio::select! {
                    r = &mut attempt => break r,
                    a = rx.recv(), if closed_at.is_none() => match a {
                        Some(a) => self.intake(&a),
                        None => closed_at = Some(Instant::now()),
                    },
                }
            };
            let (items, failure) = match result.unwrap_or(Err(DeliveryError::Timeout(self.retry.timeout()))) {
                Ok(items) => {
                    // Settled: the leading items accepted or refused for good;
                    // from the first one to retry on, everything goes again
                    // (an accepted one comes back as a conflict, not a copy).
                    let settled = items.iter().take_while(|i| !matches!(i, Item::Retry(_))).count();
                    let failure = items.get(settled).map(|i| match i {
                        Item::Retry(r) => DeliveryError::Item(r.clone()),
                        _ => DeliveryError::Item("unknown".into()),
                    });
                    let failure = failure
                        .or_else(|| (items.len() < batch.len()).then(|| DeliveryError::Item("items missing".into())));
                    (items[..settled].to_vec(), failure)
                }
                Err(DeliveryError::Webhook(WebhookError::Refused { status, body })) if batch.len() == 1 => {
                    (vec![Item::Refused(format!("{status}: {body}"))], None)
                }
                Err(DeliveryError::Webhook(WebhookError::Refused { status, body })) => {
                    // Which of them? Send them one by one to find out.
                    log::warn!(
                        "sink {}: a batch of {} was refused ({status}: {body}); sending them one at a time",
                        self.name,
                        batch.len()
                    );
                    isolate = batch.len();
                    self.gauges();
                    continue;
                }
                Err(e) => (Vec::new(), Some(e)),
            };
            for (alert, item) in batch.iter().zip(&items) {
                match item {
                    Item::Refused(reason) => self.dead_letter(alert, reason),
                    _ => self.m.delivered.inc(),
                }
            }
            if from_spool {
                if let Err(e) = self.spool.pop_many(&lines[..items.len()]) {
                    self.m.spool_errors.inc();
                    log::error!("sink {}: {e}", self.name);
                }
            } else {
                self.memory.drain(..items.len());
            }
            isolate = isolate.saturating_sub(items.len());
            match failure {
                None => {
                    if self.failing {
                        log::info!("sink {}: delivering again ({} waiting)", self.name, self.len());
                    }
                    self.failing = false;
                    backoff.reset();
                }
                Some(e) => {
                    self.m.retried.inc();
                    let log_it = !self.failing || backoff.at_max();
                    let wait = backoff.next_wait();
                    if log_it {
                        log::warn!(
                            "sink {}: delivery of {} failed ({} waiting, retrying in {wait:?}): {e}",
                            self.name,
                            batch.get(items.len()).map_or("?", |a| a.id.as_str()),
                            self.len()
                        );
                    }
                    self.failing = true;
                    next_try = Instant::now() + wait;
                }
            }
            self.gauges();
        }
        // What the channel still holds goes to disk for the next run.
        rx.close();
        while let Ok(a) = rx.try_recv() {
            self.intake(&a);
        }
        if !self.spool.is_empty() {
            log::info!(
                "sink {}: {} alerts kept in {} for the next run",
                self.name,
                self.spool.len(),
                self.spool.dir().display()
            );
        }
        if !self.memory.is_empty() {
            self.m.dropped.inc_by(self.memory.len() as u64);
            log::error!(
                "sink {}: {} alerts held in memory (the spool was unwritable) lost at shutdown",
                self.name,
                self.memory.len()
            );
        }
    }

    fn is_empty(&self) -> bool {
        self.spool.is_empty() && self.memory.is_empty()
    }

    fn len(&self) -> u64 {
        self.spool.len() + self.memory.len() as u64
    }

    /// The oldest undelivered alerts (up to `cap`: count, bytes) and their
    /// spooled lines. An unreadable line (should not happen: the agent
    /// wrote it) at the head is dropped and counted so it cannot wedge the
    /// sink; one further on ends the batch before it.
    fn head(&mut self, cap: (usize, usize)) -> Option<(Vec<Alert>, Vec<Vec<u8>>)> {
        let mut lines = match self.spool.peek_many(cap.0, cap.1) {
            Ok(l) => l,
            Err(e) => {
                self.m.spool_errors.inc();
                log::error!("sink {}: {e}", self.name);
                return None;
            }
        };
        let mut alerts = Vec::with_capacity(lines.len());
        for line in &lines {
            match serde_json::from_slice(line) {
                Ok(a) => alerts.push(a),
                Err(e) if alerts.is_empty() => {
                    log::error!("sink {}: dropping an unreadable spooled alert: {e}", self.name);
                    self.m.dropped.inc();
                    self.overflow += 1;
                    if let Err(e) = self.spool.pop_many(&lines[..1]) {
                        self.m.spool_errors.inc();
                        log::error!("sink {}: {e}", self.name);
                    }
                    return None;
                }
                Err(_) => break,
            }
        }
        lines.truncate(alerts.len());
        Some((alerts, lines))
    }

    /// Keeps an alert the receiver refused for good in the sink's
    /// dead-letter file (`dead-letter.jsonl` in its spool directory, one
    /// JSON object a line: when, why, the alert), so it no longer holds
    /// the alerts behind it. Counted; a failed write counts as a drop.
    fn dead_letter(&mut self, alert: &Alert, reason: &str) {
        self.m.dead_lettered.inc();
        let path = self.spool.dir().join(DEAD_LETTER);
        let line = json!({
            "at": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "sink": self.name,
            "reason": reason,
            "alert": alert,
        });
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        match res {
            Ok(()) => log::error!(
                "sink {}: alert {} refused for good ({reason}); kept in {}",
                self.name,
                alert.id,
                path.display()
            ),
            Err(e) => {
                self.m.dropped.inc();
                self.overflow += 1;
                log::error!(
                    "sink {}: alert {} refused for good ({reason}) and lost: {}: {e}",
                    self.name,
                    alert.id,
                    path.display()
                );
            }
        }
    }

    /// Puts an arriving alert on disk, or in memory when the disk cannot take
    /// it (after the folded report of earlier drops, when one is due and
    /// there is room for it now).
    fn intake(&mut self, alert: &Alert) {
        let due = self.overflow_at.is_none_or(|at| at.elapsed() >= OVERFLOW_EVERY);
        if self.overflow > 0 && due {
            let report = self.overflow_alert();
            if self.keep(&report) {
                log::warn!(
                    "sink {}: queued a report of {} dropped alerts",
                    self.name,
                    self.overflow
                );
                self.overflow = 0;
                self.overflow_at = Some(Instant::now());
            }
        }
        if !self.keep(alert) {
            if (self.overflow + 1).is_power_of_two() {
                log::error!(
                    "sink {}: alert {} dropped: spool and memory queue full",
                    self.name,
                    alert.id
                );
            }
            self.overflow += 1;
            self.m.dropped.inc();
        }
        self.gauges();
    }

    /// Keeps an alert until it is delivered: in the spool, else in memory.
    fn keep(&mut self, alert: &Alert) -> bool {
        // Once in memory, arrivals stay there until it drains (order).
        if self.memory.is_empty() && self.push(alert) {
            return true;
        }
        if self.memory.len() >= MEMORY {
            return false;
        }
        if self.memory.is_empty() {
            log::warn!(
                "sink {}: the spool cannot take alerts; holding up to {MEMORY} in memory",
                self.name
            );
        }
        self.memory.push_back(alert.clone());
        true
    }

    fn push(&mut self, alert: &Alert) -> bool {
        let backlog = !self.spool.is_empty() || self.failing;
        let line = match serde_json::to_vec(alert) {
            Ok(l) => l,
            Err(e) => {
                log::error!("sink {}: cannot serialise alert {}: {e}", self.name, alert.id);
                return false;
            }
        };
        match self.spool.push(&line) {
            Ok(()) => {
                if backlog {
                    self.m.spooled.inc();
                }
                true
            }
            Err(e) => {
                if matches!(e, SpoolError::Io { .. }) {
                    self.m.spool_errors.inc();
                }
                if self.memory.is_empty() {
                    log::error!("sink {}: alert {} not spooled: {e}", self.name, alert.id);
                }
                false
            }
        }
    }

    /// The alert that stands for alerts this sink lost since the last one.
    fn overflow_alert(&self) -> Alert {
        let dropped = self.overflow;
        let mut a = self.factory.raise(
            &rules::AGENT_SINK_OVERFLOW,
            Clock::now_ktime(),
            format!(
                "{dropped} alerts for sink {} were dropped: its spool and memory queue were full",
                self.name
            ),
        );
        a.pid = std::process::id();
        a.count = dropped;
        a.evidence = json!({ "sink": self.name, "dropped": dropped });
        a
    }

    fn gauges(&self) {
        self.m.backlog.set(self.len() as i64);
        self.m.spool_bytes.set(self.spool.bytes() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileSinkConfig, SpoolConfig};
    use crate::output::format::ecs;

    /// A file sink whose directory is missing fails; alerts wait in the
    /// spool, then in memory, overflow is counted and reported once, and
    /// everything kept arrives in order once the directory exists.
    #[tokio::test(flavor = "current_thread")]
    async fn outage_spools_in_order_and_reports_overflow() {
        let base = std::env::temp_dir().join(format!("mcpwatch-sinks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let out_dir = base.join("out");
        let cfg = Config {
            spool_dir: Some(base.join("spool")),
            sinks: vec![SinkConfig {
                name: "f".into(),
                spool: SpoolConfig {
                    max_alerts: 5,
                    max_bytes: 1 << 20,
                },
                retry: RetryConfig {
                    initial_backoff_ms: 20,
                    max_backoff_ms: 50,
                    timeout_ms: 1000,
                },
                file: Some(FileSinkConfig {
                    path: out_dir.join("alerts.jsonl"),
                    rotate_bytes: 0,
                    keep: 1,
                }),
                syslog: None,
                webhook: None,
            }],
            ..Config::default()
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
