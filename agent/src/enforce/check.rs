//! What this kernel enforces, per layer: printed by `mcpwatch
//! enforce-check` and at the agent's start-up, exported as a metric. Nothing
//! is silently not enforced.

use serde::Serialize;

use super::Layer;

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct LayerState {
    pub layer: Layer,
    pub enforced: bool,
    /// Why, in words (the Landlock ABI, "not built"...).
    pub detail: String,
}

/// The Landlock ABI of the running kernel (0: none). The `landlock` crate
/// keeps its probe private (so callers do not branch on it); reporting it
/// is exactly what `enforce-check` is for, so the one syscall is made here.
pub fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: with a null attribute and size 0 the kernel only returns its
    // ABI version (or an error); nothing is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0)
}

/// Whether this kernel accepts seccomp filters: `PR_GET_SECCOMP` answers
/// (0 or 2) on a kernel built with seccomp, EINVAL otherwise.
pub fn seccomp_available() -> bool {
    // SAFETY: PR_GET_SECCOMP reads the caller's mode; no memory is passed.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

/// Every layer's state on this kernel; `simulated` are reported missing;
/// `cgroup`: whether the cgroup `sock_addr` programs attached (the agent's
/// own attach, or `enforce-check`'s trial attach), with the reason if not;
/// `kill`: whether `bpf_send_signal` killed a test process.
pub fn layers(simulated: &[Layer], cgroup: &Result<String, String>, kill: &Result<String, String>) -> Vec<LayerState> {
    let abi = landlock_abi();
    Layer::ALL
        .into_iter()
        .map(|layer| {
            let (enforced, detail) = match layer {
                Layer::Landlock if abi > 0 => (
                    true,
                    format!(
                        "Landlock ABI {abi}: files{}{}",
                        if abi >= 4 { ", TCP bind/connect ports" } else { "" },
                        if abi >= 6 {
                            ", abstract Unix socket and signal scoping"
                        } else {
                            ""
                        }
                    ),
                ),
                Layer::Landlock => (false, "Landlock is not enabled in this kernel".into()),
                Layer::Seccomp if seccomp_available() => (true, "seccomp filters".into()),
                Layer::Seccomp => (false, "seccomp is not built into this kernel".into()),
                Layer::Cgroup => match cgroup {
                    Ok(where_) => (
                        true,
                        format!("cgroup v2 connect/sendmsg/bind programs attach ({where_}): network allowlist by address and name"),
                    ),
                    Err(why) => (false, format!("cgroup v2 sock_addr programs do not attach here: {why}")),
                },
                Layer::Kill => match kill {
                    Ok(how) => (true, format!("{how}: servers the agent did not launch are killed in the kernel")),
                    Err(why) => (false, format!("in-kernel kill does not work here: {why}")),
                },
            };
            if simulated.contains(&layer) {
                return LayerState {
                    layer,
                    enforced: false,
                    detail: format!("simulated missing (enforce.simulate_missing); really: {detail}"),
                };
            }
            LayerState {
                layer,
                enforced,
                detail,
            }
        })
        .collect()
}

/// The layers an enforced server the wrapper launches needs that are missing.
pub fn missing_for_sandbox(states: &[LayerState]) -> Vec<Layer> {
    states
        .iter()
        .filter(|s| matches!(s.layer, Layer::Landlock | Layer::Seccomp | Layer::Cgroup) && !s.enforced)
        .map(|s| s.layer)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_reports_every_layer_and_a_simulated_gap() {
        let all = layers(&[], &Err("no cgroup2".into()), &Err("no signal".into()));
        assert_eq!(all.len(), 4);
        let cg = all.iter().find(|s| s.layer == Layer::Cgroup).unwrap();
        assert!(!cg.enforced && cg.detail.contains("no cgroup2"));
        let kill = all.iter().find(|s| s.layer == Layer::Kill).unwrap();
        assert!(!kill.enforced && kill.detail.contains("no signal"));
        let sim = layers(
            &[Layer::Landlock],
            &Ok("/sys/fs/cgroup/mcpwatch".into()),
            &Ok("killed".into()),
        );
        assert!(sim.iter().any(|s| s.layer == Layer::Kill && s.enforced));
        assert!(!sim[0].enforced && sim[0].detail.contains("simulated"));
        assert_eq!(missing_for_sandbox(&sim), [Layer::Landlock]);
    }
}
