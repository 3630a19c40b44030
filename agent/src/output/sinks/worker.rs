//! A sink's task: takes alerts from its queue to its spool (or memory),
//! delivers from the head, settles what the receiver answered (delivered,
//! dead-lettered, retried with backoff) and reports its own overflow.

use std::{collections::VecDeque, io::Write as _, os::unix::fs::OpenOptionsExt as _, sync::Arc, time::Duration};

use serde_json::json;
use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until, timeout},
};

use super::{
    DEAD_LETTER, DEAD_LETTER_MAX_BYTES, DeliveryError, Destination, MEMORY, OVERFLOW_EVERY, SHUTDOWN_GRACE, Tracked,
    backoff,
    record::SinkRecord,
    spool::{Spool, SpoolError},
    webhook::{Item, WebhookError},
};
use crate::{
    alerts::{AlertFactory, rules},
    config::RetryConfig,
    output::{events::Clock, metrics::SinkMetrics},
};

pub(super) struct Worker {
    pub(super) name: String,
    pub(super) spool: Spool,
    pub(super) retry: RetryConfig,
    pub(super) m: SinkMetrics,
    /// Alerts that came while the spool could not take them, newer than
    /// everything in the spool (while it holds any, arrivals queue here too).
    pub(super) memory: VecDeque<SinkRecord>,
    /// Alerts dropped since the last overflow report.
    pub(super) overflow: u64,
    /// When the last overflow report was queued.
    pub(super) overflow_at: Option<Instant>,
    /// The last delivery attempt failed.
    pub(super) failing: bool,
    pub(super) factory: AlertFactory,
    pub(super) tracked: Tracked,
}

impl Worker {
    pub(super) async fn run(mut self, mut dest: Destination, mut rx: mpsc::Receiver<Arc<SinkRecord>>) {
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
                    let settled = items
                        .iter()
                        .take(batch.len())
                        .take_while(|i| !matches!(i, Item::Retry(_)))
                        .count();
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
            for (rec, item) in batch.iter().zip(&items) {
                match item {
                    Item::Refused(reason) => {
                        self.settle(rec, Err(format!("refused: {reason}")));
                        self.dead_letter(rec, reason)
                    }
                    _ => {
                        self.settle(rec, Ok(()));
                        self.m.delivered.inc()
                    }
                }
            }
            if let Some(e) = &failure {
                for rec in &batch[items.len()..] {
                    self.settle(rec, Err(format!("{e} (kept in its spool, retried)")));
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
                            batch.get(items.len()).map_or_else(|| "?".into(), SinkRecord::label),
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
    fn head(&mut self, cap: (usize, usize)) -> Option<(Vec<SinkRecord>, Vec<Vec<u8>>)> {
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
            match SinkRecord::from_spooled(line) {
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

    /// Answers whoever waits on an alert (`test-alert`); lines have no one.
    fn settle(&self, rec: &SinkRecord, outcome: super::Outcome) {
        if let Some(id) = rec.alert_id() {
            self.tracked.settle(id, outcome);
        }
    }

    /// Keeps what the receiver refused for good in the sink's dead-letter
    /// file (`dead-letter.jsonl` in its spool directory, one JSON object a
    /// line: when, why, the `alert` or event `line`), so it no longer holds
    /// what is behind it. Counted; a failed write counts as a drop.
    fn dead_letter(&mut self, rec: &SinkRecord, reason: &str) {
        let path = self.spool.dir().join(DEAD_LETTER);
        let mut line = json!({
            "at": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "sink": self.name,
            "reason": reason,
        });
        match rec {
            SinkRecord::Alert(a) => line["alert"] = json!(a),
            SinkRecord::Line(l) => line["line"] = l.clone(),
        }
        let res = append_dead_letter(&path, &format!("{line}\n"), DEAD_LETTER_MAX_BYTES);
        if matches!(res, Ok(false)) {
            // Bounded like the spool: a receiver refusing everything must not
            // fill the disk; past the cap a refused alert is a counted drop.
            self.count_drop(rec);
            log::error!(
                "sink {}: {} refused for good ({reason}) and dropped: {} is full ({} MiB)",
                self.name,
                rec.label(),
                path.display(),
                DEAD_LETTER_MAX_BYTES >> 20
            );
            return;
        }
        let res = res.map(drop);
        if res.is_ok() {
            self.m.dead_lettered.inc();
        }
        match res {
            Ok(()) => log::error!(
                "sink {}: {} refused for good ({reason}); kept in {}",
                self.name,
                rec.label(),
                path.display()
            ),
            Err(e) => {
                self.count_drop(rec);
                log::error!(
                    "sink {}: {} refused for good ({reason}) and lost: {}: {e}",
                    self.name,
                    rec.label(),
                    path.display()
                );
            }
        }
    }

    /// Puts an arriving alert on disk, or in memory when the disk cannot take
    /// it (after the folded report of earlier drops, when one is due and
    /// there is room for it now).
    fn intake(&mut self, rec: &SinkRecord) {
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
        if !self.keep(rec) {
            if self.count_drop(rec).is_power_of_two() {
                log::error!(
                    "sink {}: {} dropped: spool and memory queue full",
                    self.name,
                    rec.label()
                );
            }
            self.settle(rec, Err("dropped: spool and memory queue full".into()));
        }
        self.gauges();
    }

    /// Keeps an alert until it is delivered: in the spool, else in memory.
    fn keep(&mut self, rec: &SinkRecord) -> bool {
        if rec.alert_id().is_none() {
            // Event lines: the spool up to three quarters, never memory (kept for alerts).
            return self.memory.is_empty() && !self.spool.nearly_full() && self.push(rec);
        }
        // Once in memory, arrivals stay there until it drains (order).
        if self.memory.is_empty() && self.push(rec) {
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
        self.memory.push_back(rec.clone());
        true
    }

    fn push(&mut self, rec: &SinkRecord) -> bool {
        let backlog = !self.spool.is_empty() || self.failing;
        let line = match rec.to_spooled() {
            Ok(l) => l,
            Err(e) => {
                log::error!("sink {}: cannot serialise {}: {e}", self.name, rec.label());
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
                    log::error!("sink {}: {} not spooled: {e}", self.name, rec.label());
                }
                false
            }
        }
    }

    /// Counts a record lost: an alert in `dropped` and the next overflow
    /// report, a line in `lines_dropped` only. The count so far.
    fn count_drop(&mut self, rec: &SinkRecord) -> u64 {
        if rec.alert_id().is_none() {
            self.m.lines_dropped.inc();
            return self.m.lines_dropped.get();
        }
        self.m.dropped.inc();
        self.overflow += 1;
        self.overflow
    }

    /// The alert that stands for alerts this sink lost since the last one.
    fn overflow_alert(&self) -> SinkRecord {
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
        SinkRecord::from(a)
    }

    fn gauges(&self) {
        self.m.backlog.set(self.len() as i64);
        self.m.spool_bytes.set(self.spool.bytes() as i64);
    }
}

/// Appends `line` to the dead-letter file unless it already holds `cap`
/// bytes: `Ok(false)` when full.
fn append_dead_letter(path: &std::path::Path, line: &str, cap: u64) -> std::io::Result<bool> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= cap) {
        return Ok(false);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))?;
    Ok(true)
}

#[cfg(test)]
mod dead_letter_tests {
    #[test]
    fn the_dead_letter_file_stops_at_its_cap() {
        let d = std::env::temp_dir().join(format!("mcpwatch-dead-letter-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("dead-letter.jsonl");
        let _ = std::fs::remove_file(&p);
        assert!(super::append_dead_letter(&p, "{\"a\":1}\n", 16).unwrap());
        assert!(super::append_dead_letter(&p, "{\"a\":2}\n", 16).unwrap());
        assert!(
            !super::append_dead_letter(&p, "{\"a\":3}\n", 16).unwrap(),
            "full at 16 bytes"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
