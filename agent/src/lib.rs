//! mcpwatch: watch what MCP servers do, in the kernel, against what they declared.
//!
//! One module per stage of the pipeline:
//! `loader` (mounts, BTF offsets, load/attach) -> `decode` (records to events)
//! -> `procs`/`servers` (enrichment) -> `discover` (rules) -> `mcp` (stdio
//! conversation: tool calls, pins, poisoning) -> `policy` (manifests, baselines,
//! built-in rules -> alerts) -> `output` (JSON lines) and `sinks` (alert delivery
//! with spools); `metrics` and `metrics_http` export Prometheus metrics; `config`
//! is the configuration file; `control` is the wrapper's registration socket, `stdio` tells the
//! kernel's capture which pipes are a server's wire,
//! `agent` the loop that ties them together.

pub mod agent;
pub mod alert;
pub mod btf;
pub mod config;
pub mod control;
pub mod decode;
pub mod discover;
pub mod dns;
pub mod loader;
pub mod mcp;
pub mod metrics;
pub mod metrics_http;
pub mod mounts;
pub mod output;
pub mod policy;
pub mod procs;
pub mod servers;
pub mod sinks;
pub mod stdio;
pub mod sysview;
pub mod wrapper;
