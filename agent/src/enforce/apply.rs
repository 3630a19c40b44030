//! The wrapper's side: applies a [`Sandbox`] to itself just before it execs
//! the server, which inherits it and cannot undo it (`no_new_privs`, a
//! Landlock domain, a seccomp filter all survive exec and are one-way).

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetError, RulesetStatus, Scope, path_beneath_rules,
};

use super::{Layer, check, sandbox::Sandbox, seccomp};

/// The newest Landlock ABI this code handles; older kernels get what they
/// can enforce (best effort) and the report names the rest.
const ABI_HANDLED: ABI = ABI::V6;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("building the Landlock ruleset: {0}")]
    Landlock(#[from] RulesetError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
}

/// What was applied, and what this kernel could not enforce.
#[derive(Debug, Default)]
pub struct Applied {
    pub landlock: bool,
    pub seccomp: bool,
    pub not_enforced: Vec<String>,
}

/// Applies `sb` to the calling process (single-threaded: the wrapper).
pub fn apply(sb: &Sandbox) -> Result<Applied, ApplyError> {
    let mut out = Applied::default();
    nix::sys::prctl::set_no_new_privs().map_err(ApplyError::NoNewPrivs)?;
    if sb.missing.contains(&Layer::Landlock) {
        out.not_enforced.push("landlock (missing on this kernel)".into());
    } else {
        let status = landlock(sb)?;
        out.landlock = status != RulesetStatus::NotEnforced;
        let abi = check::landlock_abi();
        for (need, what) in [
            (2, "file renames and links across directories (Landlock ABI 2)"),
            (3, "truncation (Landlock ABI 3)"),
            (4, "TCP bind and connect ports (Landlock ABI 4)"),
            (5, "device ioctls (Landlock ABI 5)"),
            (6, "abstract Unix socket and signal scoping (Landlock ABI 6)"),
        ] {
            if abi < need {
                out.not_enforced.push(what.into());
            }
        }
        if status == RulesetStatus::NotEnforced {
            out.not_enforced.push("landlock (not enforced by this kernel)".into());
        }
    }
    if sb.missing.contains(&Layer::Seccomp) {
        out.not_enforced.push("seccomp (missing on this kernel)".into());
    } else {
        let prog = seccomp::filter(&sb.seccomp_deny, sb.agent_pid)?;
        seccomp::install(&prog)?;
        out.seccomp = true;
    }
    Ok(out)
}

fn landlock(sb: &Sandbox) -> Result<RulesetStatus, RulesetError> {
    let abi = ABI_HANDLED;
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?;
    if sb.connect_tcp.is_some() {
        rs = rs.handle_access(AccessNet::ConnectTcp)?;
    }
    if sb.bind_tcp.is_some() {
        rs = rs.handle_access(AccessNet::BindTcp)?;
    }
    let rs = rs.scope(Scope::from_all(abi))?;
    let read: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut c = rs
        .create()?
        .add_rules(path_beneath_rules(&sb.read, read))?
        .add_rules(path_beneath_rules(&sb.write, AccessFs::from_write(abi) | read))?
        .add_rules(path_beneath_rules(&sb.exec, AccessFs::Execute | AccessFs::ReadFile))?;
    for p in sb.connect_tcp.iter().flatten() {
        c = c.add_rule(NetPort::new(*p, AccessNet::ConnectTcp))?;
    }
    for p in sb.bind_tcp.iter().flatten() {
        c = c.add_rule(NetPort::new(*p, AccessNet::BindTcp))?;
    }
    Ok(c.restrict_self()?.ruleset)
}
