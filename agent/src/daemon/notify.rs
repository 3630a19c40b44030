//! systemd's notification protocol (`Type=notify`): READY once the programs
//! are attached and the control socket answers, a watchdog ping from the
//! event loop itself (so a stuck loop, not only a dead process, is
//! restarted), STOPPING at shutdown. Without `NOTIFY_SOCKET` it does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    /// Ping at least this often (half of WatchdogSec), when a watchdog is on.
    every: Option<Duration>,
    last: Instant,
}

impl Notifier {
    pub fn new() -> Self {
        Notifier {
            every: sd_notify::watchdog_enabled().map(|d| d / 2),
            last: Instant::now(),
        }
    }

    pub fn ready(&mut self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
        self.last = Instant::now();
    }

    /// Called from the event loop's tick, every `period`: pings when the
    /// next tick would be late.
    pub fn tick(&mut self, period: Duration) {
        if let Some(every) = self.every
            && self.last.elapsed() + period >= every
        {
            send(&[NotifyState::Watchdog]);
            self.last = Instant::now();
        }
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        log::warn!("systemd notification: {e}");
    }
}
