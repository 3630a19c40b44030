//! The kernel side, seen from userspace: mounting what the programs need
//! (`mounts`), the running kernel's field offsets (`btf`), loading the
//! programs (`loader`) through a loading process of its own (`apart`, which
//! runs `attach`), the programs attached later and the maps by name
//! (`objects`), the cgroup network allowlist's programs and maps
//! (`cgroup_net`), the kill layer's maps and its probe (`kill`), the kernel objects kept across agent
//! restarts (`keep`), the event ring's reader (`ring`), ring records into typed events
//! (`decode`), which pipes are a server's wire (`stdio`), the set of watched
//! processes (`watchset`) and the probes' own drop counters (`probe_errors`).

pub mod apart;
pub mod attach;
pub mod btf;
pub mod cgroup_net;
pub mod decode;
pub mod keep;
pub mod kill;
pub mod loader;
pub mod mounts;
pub mod objects;
pub mod probe_errors;
pub mod ring;
pub mod stdio;
pub mod watchset;
