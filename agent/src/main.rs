//! The `mcpwatch` command: parses the command line and hands each verb to its
//! module under `cli/`.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mcpwatch",
    version,
    about = "Watch what MCP servers do, in the kernel, against what they declared"
)]
struct Cli {
    /// More log output on stderr, repeatable: the agent logs at info and every
    /// other verb at warn; -v adds debug, -vv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log filter, overriding -v and RUST_LOG: a level (error, warn, info,
    /// debug, trace) or env_logger's `module=level,...` list.
    #[arg(long, value_name = "FILTER", global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Sets up the log: `--log-level`, else RUST_LOG when no `-v` is given, else
/// the verb's level raised by each `-v`.
fn init_log(cli: &Cli) {
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    let base = if matches!(cli.command, Command::Agent(_)) { 2 } else { 1 };
    let level = LEVELS[(base + usize::from(cli.verbose)).min(LEVELS.len() - 1)];
    let mut b = match (&cli.log_level, cli.verbose) {
        (Some(f), _) => {
            let mut b = env_logger::Builder::new();
            b.parse_filters(f);
            b
        }
        (None, 0) => env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)),
        (None, _) => {
            let mut b = env_logger::Builder::new();
            b.parse_filters(level);
            b
        }
    };
    b.init();
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (root): load the kernel programs and write one JSON line per event.
    Agent(cli::agent::AgentArgs),
    /// Check manifest files (or directories of them) and print what is wrong.
    CheckManifests(cli::check_manifests::CheckManifestsArgs),
    /// Register with the running agent as server NAME, then exec CMD.
    /// Use it as the server's command in an MCP host configuration.
    Exec(cli::exec::ExecArgs),
    /// Show the tools the gate withheld from SERVER and approve the TOOLs named (root).
    Approve(cli::approve::ApproveArgs),
    /// Show what the running agent watches (root).
    Status(cli::status::StatusArgs),
    /// Ask the running agent to emit a test alert through every output (root).
    TestAlert(cli::test_alert::TestAlertArgs),
    /// Follow the events file as readable lines, filtered by server, kind, tool, severity.
    Tail(cli::tail::TailArgs),
    /// Per server: tool calls, what each tool touched (files, hosts, programs), alerts.
    Report(cli::report::ReportArgs),
    /// A live screen of the running agent: servers, calls/s per tool, alerts, loss, sinks (root).
    Top(cli::top::TopArgs),
    /// Tool pins the agent stored (state directory): what a manifest's `pins` can ship.
    Pins(cli::pins::PinsArgs),
    /// Print the kernel structure offsets the probes would use, resolved from BTF.
    Offsets(cli::offsets::OffsetsArgs),
    /// Print every x86_64 syscall with what the agent does with it (followed, or why not).
    Syscalls(cli::syscalls::SyscallsArgs),
    /// Print, per enforcement layer, whether this kernel enforces it.
    EnforceCheck(cli::enforce_check::EnforceCheckArgs),
    /// Write the man pages or the shell completions (the installer runs it).
    #[command(hide = true)]
    Generate(cli::generate::GenerateArgs),
    /// The agent's loading process (`kernel/apart.rs`): loads, attaches and pins the kernel programs.
    #[command(hide = true)]
    LoadKernel(cli::load_kernel::LoadKernelArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_log(&cli);
    match cli.command {
        Command::Agent(args) => cli::agent::run(args),
        Command::CheckManifests(args) => std::process::exit(cli::check_manifests::run(args)),
        Command::Exec(args) => std::process::exit(cli::exec::run(args)),
        Command::Approve(args) => cli::approve::run(args),
        Command::Status(args) => cli::status::run(args),
        Command::TestAlert(args) => std::process::exit(cli::test_alert::run(args)?),
        Command::Pins(args) => cli::pins::run(args),
        Command::Tail(args) => cli::tail::run(args),
        Command::Report(args) => cli::report::run(args),
        Command::Top(args) => cli::top::run(args),
        Command::Offsets(args) => cli::offsets::run(args),
        Command::Syscalls(args) => cli::syscalls::run(args),
        Command::EnforceCheck(args) => std::process::exit(cli::enforce_check::run(args)?),
        Command::Generate(args) => cli::generate::run::<Cli>(args),
        Command::LoadKernel(args) => std::process::exit(cli::load_kernel::run(args)),
    }
}
