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

/// The bench's sections, in the order they run (`peer` only with `--peer-falco`).
pub const SECTIONS: [&str; 5] = ["overhead", "throughput", "enforcement", "gate", "peer"];

/// The sections one run measures (`cargo xtask bench --only gate,enforcement`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sections(u8);

impl Sections {
    pub const ALL: Sections = Sections((1 << SECTIONS.len()) - 1);
    pub const PEER: Sections = Sections(1 << 4);

    /// Whether `name` (one of [`SECTIONS`]) runs.
    pub fn has(self, name: &str) -> bool {
        SECTIONS
            .iter()
            .position(|s| *s == name)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    /// Only the side by side with Falco.
    pub fn only_peer(self) -> bool {
        self == Self::PEER
    }
}

impl std::str::FromStr for Sections {
    type Err = String;

    /// A comma-separated list of section names.
    fn from_str(list: &str) -> Result<Self, String> {
        let mut bits = 0;
        for name in list.split(',').map(str::trim) {
            let Some(i) = SECTIONS.iter().position(|s| *s == name) else {
                return Err(format!(
                    "unknown bench section {name:?} (known: {})",
                    SECTIONS.join(", ")
                ));
            };
            bits |= 1 << i;
        }
        Ok(Sections(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_parse_from_a_comma_separated_list_of_known_names() {
        let gate: Sections = "gate".parse().unwrap();
        assert!(gate.has("gate"));
        assert!(SECTIONS.iter().filter(|s| **s != "gate").all(|s| !gate.has(s)));
        let two: Sections = "enforcement, gate".parse().unwrap();
        assert!(two.has("enforcement") && two.has("gate") && !two.has("overhead"));
        assert_eq!("gate,gate".parse::<Sections>(), Ok(gate));
        assert_eq!("peer".parse::<Sections>(), Ok(Sections::PEER));
        assert!(Sections::PEER.only_peer() && Sections::PEER.has("peer"));
        assert!(!two.only_peer() && !Sections::ALL.only_peer());
        assert!(SECTIONS.iter().all(|s| Sections::ALL.has(s)));
        for bad in ["", "gate,", "Gate", "gates", "gate,latency"] {
            let e = bad.parse::<Sections>().unwrap_err();
            assert!(
                e.contains("unknown bench section") && e.contains("known: overhead"),
                "{bad}: {e}"
            );
        }
    }
}
