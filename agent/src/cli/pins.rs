//! `mcpwatch pins`: the tool pins the agent stored, as manifest JSON.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mcpwatch::{
    config::{Config, DEFAULT_CONFIG},
    mcp::pins::{self, PinFile, PinStore},
};

#[derive(clap::Args)]
pub struct PinsArgs {
    #[command(subcommand)]
    command: PinsCommand,
}

#[derive(clap::Subcommand)]
enum PinsCommand {
    /// Print stored pins as manifest-ready JSON: `{"pins": {...}}` for one server,
    /// `{"SERVER": {"pins": {...}}, ...}` for all. The pinned descriptions go to
    /// stderr, for review before approving them.
    Show {
        /// Only this server's pins.
        #[arg(long, value_name = "NAME")]
        server: Option<String>,
        /// The agent's state directory (overrides the configuration's `state_dir`).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Configuration file (TOML) to take `state_dir` from.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

pub fn run(args: PinsArgs) -> anyhow::Result<()> {
    let PinsCommand::Show {
        server,
        state_dir,
        config,
    } = args.command;
    let state_dir = match state_dir {
        Some(d) => d,
        None => match &config {
            Some(p) => Config::load(p, true)?.state_dir,
            None => Config::load(Path::new(DEFAULT_CONFIG), false)?.state_dir,
        },
    };
    show(&state_dir, server.as_deref())
}

/// `mcpwatch pins show`: stored pins on stdout as manifest JSON, descriptions on stderr.
fn show(state_dir: &Path, server: Option<&str>) -> anyhow::Result<()> {
    let mut store = PinStore::new(state_dir);
    let files = match server {
        Some(name) => {
            let file = store.stored(name)?.with_context(|| {
                format!(
                    "no pins for server {name} in {}: the agent pins a server's tools the first time it lists them",
                    store.path(name).display()
                )
            })?;
            vec![file]
        }
        None => store.stored_all()?,
    };
    if files.is_empty() {
        eprintln!("# no pins in {}", state_dir.join("pins").display());
    }
    for f in &files {
        eprintln!(
            "# {}: {} tool(s) pinned in {}",
            f.server,
            f.tools.len(),
            store.path(&f.server).display()
        );
        for (tool, pin) in &f.tools {
            let first = pin.description.lines().next().unwrap_or("");
            eprintln!("#   {tool}: {}", pins::cap(first, 160));
        }
    }
    let fragment = |f: &PinFile| serde_json::json!({ "pins": f.expected() });
    let out = match server {
        Some(_) => fragment(&files[0]),
        None => serde_json::Value::Object(files.iter().map(|f| (f.server.clone(), fragment(f))).collect()),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
