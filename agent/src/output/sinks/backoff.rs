//! Waits between delivery attempts: capped exponential backoff with AWS's
//! "full jitter" (each wait drawn uniformly from zero to
//! `min(max, initial * 2^failures)`). Without the jitter, a fleet of agents
//! that lost their SIEM at the same moment would retry in lockstep and hit
//! it together when it comes back.

use std::time::Duration;

pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Failures in a row so far.
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// A delivery went through: the next failure starts small again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The exponential ceiling the next wait is drawn under.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// True once the ceiling reached `max` (retries are then logged less).
    pub fn at_max(&self) -> bool {
        self.ceiling() >= self.max
    }

    /// The wait after one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling().as_millis() as u64;
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(rand::random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits are spread over [0, ceiling], the ceiling doubles up to the cap,
    /// and a success starts over.
    #[test]
    fn full_jitter_under_a_capped_doubling_ceiling() {
        let (initial, max) = (Duration::from_millis(200), Duration::from_millis(30_000));
        let mut b = Backoff::new(initial, max);
        let ceilings: Vec<u64> = (0..10)
            .map(|_| {
                let c = b.ceiling();
                let w = b.next_wait();
                assert!(w <= c, "{w:?} above {c:?}");
                c.as_millis() as u64
            })
            .collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        assert!(b.at_max());
        // Many agents at the same failure count: their waits spread out.
        let waits: Vec<u64> = (0..1000)
            .map(|_| {
                let mut b = Backoff::new(initial, max);
                for _ in 0..8 {
                    b.next_wait();
                }
                b.next_wait().as_millis() as u64
            })
            .collect();
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 500, "only {} distinct waits", distinct.len());
        let below_half = waits.iter().filter(|w| **w < 15_000).count();
        assert!(
            (350..650).contains(&below_half),
            "{below_half} of 1000 under half the cap"
        );
        b.reset();
        assert_eq!(b.ceiling(), initial);
        // No overflow after very many failures.
        for _ in 0..100 {
            assert!(b.next_wait() <= max);
        }
    }
}
