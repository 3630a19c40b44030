//! The gate's metrics: its decisions per server, tool and outcome, and the
//! time it added to the calls it judged (`metrics::Metrics::gate_decision`).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub(super) struct GateFamilies {
    pub(super) decisions: IntCounterVec,
    pub(super) added_latency: HistogramVec,
}

impl GateFamilies {
    pub(super) fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "mcpwatch_gate_decisions_total",
                "tools/call decisions of the gate, by server, tool and outcome (allowed, denied)",
            ),
            &["server", "tool", "outcome"],
        )?;
        r.register(Box::new(decisions.clone()))?;
        // The budget is 50 µs per message: buckets from 5 µs to 10 ms.
        let added_latency = HistogramVec::new(
            HistogramOpts::new(
                "mcpwatch_gate_added_latency_seconds",
                "Time the gate added to a judged tools/call (decision and relay), by server and tool",
            )
            .buckets(vec![
                0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01,
            ]),
            &["server", "tool"],
        )?;
        r.register(Box::new(added_latency.clone()))?;
        Ok(Self {
            decisions,
            added_latency,
        })
    }
}
