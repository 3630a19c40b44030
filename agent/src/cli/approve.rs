//! `mcpwatch approve SERVER [TOOL...]`: shows the tools the gate withheld
//! (description, schema, poisoning findings) and approves the ones named,
//! for this host, in the agent's state directory.

use std::path::{Path, PathBuf};

use mcpwatch::{
    config::{Config, DEFAULT_CONFIG},
    mcp::{gate::approvals::Approvals, pins::Tool, poison},
};

#[derive(clap::Args)]
pub struct ApproveArgs {
    /// The server, as `mcpwatch exec --server` names it.
    server: String,
    /// Tools to approve (none: only show what is withheld).
    tools: Vec<String>,
    /// The agent's state directory (overrides the configuration's `state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Configuration file (TOML) to take `state_dir` from.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

pub fn run(args: ApproveArgs) -> anyhow::Result<()> {
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => match &args.config {
            Some(p) => Config::load(p, true)?.state_dir,
            None => Config::load(Path::new(DEFAULT_CONFIG), false)?.state_dir,
        },
    };
    let store = Approvals::new(&state_dir);
    let file = store.load(&args.server)?;
    if file.pending.is_empty() {
        println!(
            "{}: no tool withheld by the gate ({})",
            args.server,
            store.path(&args.server).display()
        );
    }
    for (name, t) in &file.pending {
        println!("{name} ({:?}, {})", t.why, t.hash);
        let tool = Tool::from_value(&t.definition);
        if let Some(tool) = &tool {
            println!("  description: {}", tool.description);
            println!("  schema: {}", tool.input_schema);
            for f in poison::scan_tool(tool, &[]) {
                println!("  finding: {} in {}: {}", f.rule.id, f.field, f.excerpt);
            }
        }
    }
    if args.tools.is_empty() {
        return Ok(());
    }
    for a in store.approve(&args.server, &args.tools)? {
        println!("approved on {}: {}", a.host, a.hash);
    }
    Ok(())
}
