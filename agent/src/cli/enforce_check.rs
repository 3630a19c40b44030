//! `mcpwatch enforce-check`: per enforcement layer, whether this kernel
//! enforces it (the agent logs the same at start-up and exports it as
//! `mcpwatch_enforce_layer_enforced`).

use std::{io::Write as _, path::PathBuf};

use mcpwatch::{
    config::{Config, DEFAULT_CONFIG},
    enforce::{cgroup, check},
};

#[derive(clap::Args)]
pub struct EnforceCheckArgs {
    /// The agent's configuration file (`enforce.simulate_missing` is honoured).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// One JSON object per layer instead of text.
    #[arg(long)]
    json: bool,
}

/// Exit status 0 when the sandbox layers (landlock, seccomp, cgroup) are enforced, 1 when one is not.
pub fn run(args: EnforceCheckArgs) -> anyhow::Result<i32> {
    let path = args.config.clone().unwrap_or_else(|| DEFAULT_CONFIG.into());
    let config = Config::load(&path, args.config.is_some())?;
    let simulated = config.enforce.simulated_missing();
    // Tried for real on a throwaway child (not when simulated missing).
    let kill = if simulated.contains(&mcpwatch::enforce::Layer::Kill) {
        Err("simulated".to_owned())
    } else {
        mcpwatch::kernel::kill::probe_standalone()
    };
    let layers = check::layers(&simulated, &cgroup::trial(), &kill);
    let mut out = std::io::stdout().lock();
    for l in &layers {
        if args.json {
            writeln!(out, "{}", serde_json::to_string(l)?)?;
        } else {
            let word = if l.enforced { "enforced" } else { "NOT enforced" };
            writeln!(out, "{:<9}{word:<14}{}", l.layer.name(), l.detail)?;
        }
    }
    Ok(i32::from(!check::missing_for_sandbox(&layers).is_empty()))
}
