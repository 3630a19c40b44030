//! mcpwatch: watch what MCP servers do, in the kernel, against what they declared.
//!
//! Data flows one way, one module per stage:
//! `kernel` (mounts, BTF offsets, load/attach, records to typed events) ->
//! `pipeline` (discovery, process table, server names, DNS names) -> the
//! judgement: `mcp` (the stdio conversation: tool calls, pins, poisoning) and
//! `policy` (manifests, baselines, built-in rules) -> `alerts` (the alert and
//! its rule catalogue) -> `output` (event lines, sinks, formats, metrics).
//! `daemon` is the event loop, the control socket and the wrapper; `config`
//! the configuration file.

pub mod alerts;
pub mod config;
pub mod daemon;
pub mod enforce;
pub mod kernel;
pub mod mcp;
pub mod output;
pub mod pipeline;
pub mod policy;
pub mod private_file;
#[cfg(test)]
mod proptesting;
pub mod untrusted;
pub mod view;
