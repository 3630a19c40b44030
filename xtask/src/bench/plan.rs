//! What one bench run measures and how much of it: sizes, the loops, the modes.

/// Sizes of one bench run.
#[derive(Clone, Copy)]
pub struct Plan {
    pub runs: usize,
    pub openat: u64,
    pub connect: u64,
    pub forkexec: u64,
    /// `perf bench sched messaging -l`.
    pub messaging_loops: u32,
    /// Seconds per throughput step.
    pub step_seconds: f64,
    pub first_rate: u64,
    pub max_steps: usize,
    pub latency_seconds: f64,
    /// Alerts wanted in the latency run.
    pub latency_alerts: u64,
    /// Enforcement section: server starts, opens and connects per mode and run.
    pub starts: u64,
    pub enforced_openat: u64,
    pub enforced_connect: u64,
    /// Messages per run through the gate (and directly).
    pub gate_messages: usize,
}

impl Plan {
    pub const FULL: Plan = Plan {
        runs: 5,
        openat: 2_000_000,
        connect: 200_000,
        forkexec: 1_000,
        messaging_loops: 300,
        step_seconds: 30.0,
        first_rate: 62_500,
        max_steps: 7,
        latency_seconds: 30.0,
        latency_alerts: 3_000,
        starts: 40,
        enforced_openat: 500_000,
        enforced_connect: 100_000,
        gate_messages: 5_000,
    };
    /// Seconds, for the test suite: every path runs, no figure means anything.
    pub const SMOKE: Plan = Plan {
        runs: 1,
        openat: 20_000,
        connect: 2_000,
        forkexec: 20,
        messaging_loops: 5,
        step_seconds: 1.0,
        first_rate: 20_000,
        max_steps: 2,
        latency_seconds: 1.0,
        latency_alerts: 50,
        starts: 2,
        enforced_openat: 2_000,
        enforced_connect: 500,
        gate_messages: 200,
    };
}

/// The loops, in the order they run.
pub const LOOPS: [&str; 3] = ["openat", "connect", "forkexec"];
pub const MODES: [&str; 3] = ["none", "floor", "agent"];
/// A port nothing listens on (connects are refused).
pub const CLOSED_PORT: u16 = 9;
pub const IDLE_SERVERS: usize = 10;
