//! `mcpwatch load-kernel` (hidden): the agent's loading process, which the
//! agent runs itself (`kernel/apart.rs`); not a verb for people.

#[derive(clap::Args)]
pub struct LoadKernelArgs {
    /// The agent's request (JSON).
    request: String,
}

/// The exit status: 0 when loaded; the answer is on stdout either way.
pub fn run(args: LoadKernelArgs) -> i32 {
    mcpwatch::kernel::apart::serve(&args.request)
}
