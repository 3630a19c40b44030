//! The enforced servers' DNS resolvers (`enforce/resolver.rs`): queries
//! answered, refused (a name the manifest does not declare), failed
//! upstream, and the destinations the answers added to the allowlist.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::{MetricsError, counter_vec, forget_series};

#[derive(Clone)]
pub(super) struct ResolverFamilies {
    queries: IntCounterVec,
    allowed: IntCounterVec,
}

/// One server's resolver series (cheap clones of the counters).
#[derive(Clone)]
pub struct ResolverMetrics {
    /// Forwarded upstream and answered (the answer's addresses allowed).
    pub answered: IntCounter,
    /// Answered REFUSED: a name the manifest does not declare.
    pub refused: IntCounter,
    /// The upstream did not answer (SERVFAIL returned).
    pub upstream_failed: IntCounter,
    /// Allowlist entries (address, protocol, port) an answer added.
    pub allowed: IntCounter,
}

impl ResolverFamilies {
    pub(super) fn new(r: &Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            queries: counter_vec(
                r,
                "mcpwatch_resolver_queries_total",
                "DNS queries of enforced servers to the agent's resolver, by server and outcome \
                 (answered, refused: an undeclared name, upstream_failed)",
                &["server", "outcome"],
            )?,
            allowed: counter_vec(
                r,
                "mcpwatch_resolver_addresses_allowed_total",
                "Destinations (address, protocol, port) the resolver's answers added to a server's allowlist",
                &["server"],
            )?,
        })
    }

    /// The series of `server_label`, created at 0.
    pub(super) fn server(&self, server_label: &str) -> ResolverMetrics {
        let q = |outcome| self.queries.with_label_values(&[server_label, outcome]);
        ResolverMetrics {
            answered: q("answered"),
            refused: q("refused"),
            upstream_failed: q("upstream_failed"),
            allowed: self.allowed.with_label_values(&[server_label]),
        }
    }

    pub(super) fn forget(&self, server: &str) {
        forget_series(&self.queries, server);
        forget_series(&self.allowed, server);
    }
}
