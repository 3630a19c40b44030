//! `mcpwatch report`: per server, the tool calls and what each tool touched
//! (files, hosts, programs) and its alerts, from the events file.

use std::{io::BufRead as _, path::PathBuf};

use anyhow::Context as _;
use mcpwatch::view::{
    DEFAULT_EVENTS,
    filter::{self, Filter},
    report::Report,
};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The events file the agent writes (`--events-out`); rotated files
    /// (PATH.1 ...) are read too, oldest first.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_EVENTS)]
    file: PathBuf,
    /// Only this server (repeatable).
    #[arg(long, value_name = "NAME")]
    server: Vec<String>,
    /// Only what happened since then: a duration back (90s, 15m, 2h, 1d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let filter = Filter {
        servers: args.server.clone(),
        since: args
            .since
            .as_deref()
            .map(|w| filter::since(w, std::time::SystemTime::now()))
            .transpose()?,
        ..Default::default()
    };
    let mut files: Vec<PathBuf> = (1..=64)
        .map(|i| PathBuf::from(format!("{}.{i}", args.file.display())))
        .filter(|p| p.is_file())
        .collect();
    files.reverse();
    files.push(args.file.clone());
    let mut report = Report::default();
    let mut garbled = 0u64;
    for f in &files {
        let r = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        for l in std::io::BufReader::new(r).lines() {
            match serde_json::from_str(&l?) {
                Ok(e) => report.add(&e, &filter),
                Err(_) => garbled += 1,
            }
        }
    }
    if garbled > 0 {
        eprintln!("{garbled} lines were not JSON and were skipped");
    }
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&report.to_json())?),
        false => print!("{}", report.to_text()),
    }
    Ok(())
}
