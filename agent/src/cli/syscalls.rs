//! `mcpwatch syscalls`: every x86_64 syscall number with what the agent does
//! with it (followed: family and operation; not followed: why), and how ia32
//! calls are handled. The table is `agent_common::syscalls::coverage`.

use std::io::Write as _;

use agent_common::syscalls::{
    coverage::{self, Decision},
    ia32,
};

#[derive(clap::Args)]
pub struct SyscallsArgs {
    /// Only the followed syscalls.
    #[arg(long)]
    followed: bool,
}

pub fn run(args: SyscallsArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for nr in 0..=coverage::MAX {
        match coverage::decision(nr) {
            Some(Decision::Followed(s)) => writeln!(out, "{nr}\t{}\tfollowed\t{:?}/{}", s.name, s.family, s.op.name())?,
            Some(Decision::NotFollowed { name, reason }) if !args.followed => {
                writeln!(out, "{nr}\t{name}\tnot followed\t{reason}")?
            }
            _ => {}
        }
    }
    if !args.followed {
        writeln!(
            out,
            "ia32 (int 0x80, numbers 0..={}): every call of a watched process is reported \
             (evasion.compat_syscall, once per process); open, creat and openat with their path",
            ia32::MAX
        )?;
    }
    Ok(())
}
