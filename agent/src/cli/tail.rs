//! `mcpwatch tail`: the events file as a person reads it — one line per event
//! or alert, filtered, following the file as the agent writes it (and across
//! its rotation: a new file at the path is opened from its start).

use std::{
    io::{BufRead as _, BufReader, IsTerminal as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use mcpwatch::view::{
    DEFAULT_EVENTS,
    filter::{self, Filter},
    line,
};

#[derive(clap::Args)]
pub struct TailArgs {
    /// The events file the agent writes (`--events-out`).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_EVENTS)]
    file: PathBuf,
    /// Only this server (repeatable).
    #[arg(long, value_name = "NAME")]
    server: Vec<String>,
    /// Only this kind of line (exec, file, net, dns, alert, tool_call, ...) or
    /// alert rule (cred.ssh, ...); repeatable.
    #[arg(long, value_name = "KIND")]
    kind: Vec<String>,
    /// Only lines caused by this tool (repeatable).
    #[arg(long, value_name = "TOOL")]
    tool: Vec<String>,
    /// Only alerts of at least this severity (info, low, medium, high, critical).
    #[arg(long, value_name = "SEVERITY")]
    severity: Option<String>,
    /// Only alerts.
    #[arg(long)]
    alerts: bool,
    /// Start this far back (90s, 15m, 2h) or at this RFC 3339 time (default:
    /// the last 10 lines that pass).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Print what is there and stop instead of following the file.
    #[arg(long)]
    no_follow: bool,
    /// The JSON lines themselves (filtered) instead of readable lines.
    #[arg(long)]
    json: bool,
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,
}

/// Lines shown from before `tail` started when no --since is given.
const BACKLOG: usize = 10;
/// How often a followed file is looked at again.
const POLL: Duration = Duration::from_millis(200);

pub fn run(args: TailArgs) -> anyhow::Result<()> {
    let filter = Filter {
        servers: args.server.clone(),
        kinds: args.kind.clone(),
        tools: args.tool.clone(),
        min_severity: args.severity.clone(),
        alerts_only: args.alerts,
        since: args
            .since
            .as_deref()
            .map(|w| filter::since(w, std::time::SystemTime::now()))
            .transpose()?,
    };
    filter.check()?;
    let color = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let out = std::io::stdout();
    let show = |l: &str, out: &mut std::io::StdoutLock| -> std::io::Result<bool> {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(l) else {
            return Ok(false);
        };
        if !filter.wants(&e) {
            return Ok(false);
        }
        match args.json {
            true => writeln!(out, "{l}")?,
            false => writeln!(out, "{}", line::render(&e, color))?,
        }
        Ok(true)
    };
    let open = || std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file.display()));
    let mut file = open()?;
    let mut inode = file.metadata()?.ino();
    // What is there already: all of it from --since, else the last BACKLOG.
    let mut reader = BufReader::new(&file);
    let mut backlog = std::collections::VecDeque::new();
    let mut buf = String::new();
    let mut pos = 0u64;
    {
        let mut out = out.lock();
        while read_line(&mut reader, &mut buf, &mut pos)? {
            if filter.since.is_some() {
                show(buf.trim_end(), &mut out)?;
            } else if serde_json::from_str::<serde_json::Value>(buf.trim_end()).is_ok_and(|e| filter.wants(&e)) {
                backlog.push_back(buf.trim_end().to_owned());
                if backlog.len() > BACKLOG {
                    backlog.pop_front();
                }
            }
        }
        for l in &backlog {
            show(l, &mut out)?;
        }
        out.flush()?;
    }
    if args.no_follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(POLL);
        // Rotated (a new file at the path) or cut: start over on what is there now.
        let now = std::fs::metadata(&args.file).ok();
        if now.as_ref().is_some_and(|m| m.ino() != inode || m.len() < pos) {
            drain(&mut reader, &mut buf, &mut pos, &out, &show)?;
            file = open()?;
            inode = file.metadata()?.ino();
            pos = 0;
            reader = BufReader::new(&file);
        }
        reader.seek(SeekFrom::Start(pos))?;
        drain(&mut reader, &mut buf, &mut pos, &out, &show)?;
    }
}

type Show<'a> = dyn Fn(&str, &mut std::io::StdoutLock) -> std::io::Result<bool> + 'a;

fn drain(
    reader: &mut BufReader<&std::fs::File>,
    buf: &mut String,
    pos: &mut u64,
    out: &std::io::Stdout,
    show: &Show<'_>,
) -> anyhow::Result<()> {
    let mut out = out.lock();
    while read_line(reader, buf, pos)? {
        show(buf.trim_end(), &mut out)?;
    }
    out.flush()?;
    Ok(())
}

/// One whole line into `buf`; a partial last line (the agent is writing it)
/// is left for the next look.
fn read_line(reader: &mut BufReader<&std::fs::File>, buf: &mut String, pos: &mut u64) -> std::io::Result<bool> {
    buf.clear();
    let n = reader.read_line(buf)?;
    if n == 0 || !buf.ends_with('\n') {
        reader.seek(SeekFrom::Start(*pos))?;
        return Ok(false);
    }
    *pos += n as u64;
    Ok(true)
}
