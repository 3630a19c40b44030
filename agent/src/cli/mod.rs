//! The verbs of the `mcpwatch` command, one module each: its arguments and
//! what it does. `main.rs` parses the command line and dispatches here.

pub mod agent;
pub mod approve;
pub mod check_manifests;
pub mod enforce_check;
pub mod exec;
pub mod generate;
pub mod load_kernel;
pub mod offsets;
pub mod pins;
pub mod report;
pub mod status;
pub mod syscalls;
pub mod tail;
pub mod test_alert;
pub mod top;
