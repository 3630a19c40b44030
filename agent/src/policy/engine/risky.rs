//! Risky operations: no manifest field declares them, so each is a finding
//! unless it targets the acting process itself.

use agent_common::io_uring::opcode_name;
use agent_common::syscalls;
use serde_json::json;

use super::Finding;
use crate::{
    alerts::rules,
    policy::activity::{ProcContext, RiskyActivity, RiskyOp},
};

/// Risky operations: no manifest field declares them.
pub(super) fn risky(ctx: &ProcContext, r: &RiskyActivity) -> Option<Finding> {
    let rule = match r.op {
        // A process reading its own memory or maps is ordinary.
        RiskyOp::ProcMem | RiskyOp::ProcEnviron | RiskyOp::ProcMaps | RiskyOp::ProcessVmReadv
            if r.target_pid == Some(ctx.pid) =>
        {
            return None;
        }
        RiskyOp::Ptrace => &rules::PROC_PTRACE,
        RiskyOp::ProcessVmReadv | RiskyOp::ProcessVmWritev | RiskyOp::ProcMem => &rules::PROC_MEMORY,
        RiskyOp::ProcEnviron => &rules::PROC_ENVIRON,
        RiskyOp::ProcMaps => &rules::PROC_MAPS,
        RiskyOp::SetUid | RiskyOp::SetGid | RiskyOp::Capset => &rules::PRIV_SETID,
        RiskyOp::InitModule => &rules::PRIV_KERNEL_MODULE,
        RiskyOp::Bpf => &rules::PRIV_BPF,
        RiskyOp::Mount => &rules::PRIV_MOUNT,
        RiskyOp::IoUringSetup => &rules::EVASION_IO_URING,
        RiskyOp::FdSteal => &rules::PROC_FD_STEAL,
        RiskyOp::CompatSyscall(nr) => return Some(compat(ctx, nr)),
        RiskyOp::IoUringOp(opcode) => return Some(io_uring_op(ctx, opcode)),
    };
    let target = r.target_pid.map(|p| format!(" on pid {p}")).unwrap_or_default();
    Some(Finding {
        rule,
        summary: format!("{} called {}{target}", ctx.server, r.op.name()),
        evidence: json!({ "op": r.op.name(), "target_pid": r.target_pid }),
        declared: None,
        dedup_key: format!("{}:{:?}", r.op.name(), r.target_pid),
        would_block: None,
    })
}

/// An ia32 syscall: one finding per process (the first call names it; the
/// rest are event lines).
fn compat(ctx: &ProcContext, nr: u32) -> Finding {
    let name = syscalls::ia32::name(nr).unwrap_or("unknown");
    Finding {
        rule: &rules::EVASION_COMPAT_SYSCALL,
        summary: format!(
            "{} (pid {}) made the ia32 syscall {name} ({nr}) with int 0x80, outside the x86_64 table",
            ctx.server, ctx.pid
        ),
        evidence: json!({ "op": "compat_syscall", "ia32_nr": nr, "ia32_name": name, "pid": ctx.pid }),
        declared: None,
        dedup_key: format!("compat_syscall:{}", ctx.pid),
        would_block: None,
    }
}

/// An operation submitted through a ring: folded per process and opcode
/// (a ring's reads and writes would otherwise be an alert each).
fn io_uring_op(ctx: &ProcContext, opcode: u8) -> Finding {
    let name = opcode_name(opcode).map_or_else(|| format!("opcode {opcode}"), str::to_owned);
    Finding {
        rule: &rules::EVASION_IO_URING_OP,
        summary: format!("{} submitted {name} through an io_uring (not a syscall)", ctx.server),
        evidence: json!({ "op": "io_uring_op", "opcode": name }),
        declared: None,
        dedup_key: format!("io_uring_op:{}:{opcode}", ctx.pid),
        would_block: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::policy::activity::{Activity, RiskyActivity, RiskyOp};

    #[test]
    fn risky_operations() {
        let (mut s, ctx) = server("{}", NODE);
        let risky = |op, target_pid| Activity::Risky(RiskyActivity { op, target_pid });
        let f = s.evaluate(&ctx, &risky(RiskyOp::Ptrace, Some(999)));
        assert_eq!(rules(&f), ["proc.ptrace"]);
        assert_eq!(f[0].rule.mitre.unwrap().0, "T1055.008");
        assert_eq!(
            rules(&s.evaluate(&ctx, &risky(RiskyOp::ProcMem, Some(999)))),
            ["proc.memory"]
        );
        assert!(
            s.evaluate(&ctx, &risky(RiskyOp::ProcMem, Some(11))).is_empty(),
            "its own memory"
        );
        assert_eq!(
            rules(&s.evaluate(&ctx, &risky(RiskyOp::ProcEnviron, Some(1)))),
            ["proc.environ"]
        );
        assert_eq!(
            rules(&s.evaluate(&ctx, &risky(RiskyOp::InitModule, None))),
            ["priv.kernel_module"]
        );
        assert_eq!(rules(&s.evaluate(&ctx, &risky(RiskyOp::SetUid, None))), ["priv.setid"]);
        let steal = s.evaluate(&ctx, &risky(RiskyOp::FdSteal, Some(999)));
        assert_eq!(rules(&steal), ["proc.fd_steal"]);
        assert_eq!(steal[0].rule.mitre.unwrap().0, "T1055");
        assert!(steal[0].summary.contains("pid 999"));
        // ia32 calls: one finding per process, naming the first call.
        let compat = s.evaluate(&ctx, &risky(RiskyOp::CompatSyscall(5), None));
        assert_eq!(rules(&compat), ["evasion.compat_syscall"]);
        assert!(compat[0].summary.contains("open (5)"), "{}", compat[0].summary);
        let again = s.evaluate(&ctx, &risky(RiskyOp::CompatSyscall(102), None));
        assert_eq!(
            again.first().map(|f| &f.dedup_key),
            compat.first().map(|f| &f.dedup_key)
        );
        // The file open of another process's memory is left to the risky event.
        assert!(s.evaluate(&ctx, &open("/proc/999/mem", false, 3)).is_empty());
    }

    #[test]
    fn io_uring_operations_fold_per_process_and_opcode() {
        let (mut s, ctx) = server("{}", NODE);
        let op = |opcode| {
            Activity::Risky(RiskyActivity {
                op: RiskyOp::IoUringOp(opcode),
                target_pid: None,
            })
        };
        let f = s.evaluate(&ctx, &op(18));
        assert_eq!(rules(&f), ["evasion.io_uring_op"]);
        assert!(f[0].summary.contains("openat"), "{}", f[0].summary);
        // Folded by the dedup key: one per process and opcode.
        let again = s.evaluate(&ctx, &op(18));
        assert_eq!(again[0].dedup_key, f[0].dedup_key);
        let connect = s.evaluate(&ctx, &op(16));
        assert_eq!(rules(&connect), ["evasion.io_uring_op"]);
        assert_ne!(connect[0].dedup_key, f[0].dedup_key);
        let f = s.evaluate(&ctx, &op(200));
        assert!(f[0].summary.contains("opcode 200"), "{}", f[0].summary);
    }
}
