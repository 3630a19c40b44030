//! `mcpwatch-load floor`: the benchmark's floor (`floor-ebpf`), the agent's
//! hooks doing nothing but the watched-set lookup, attached until SIGINT or
//! SIGTERM.

use anyhow::{Context as _, bail};
use aya::{Btf, Ebpf, EbpfLoader};
use mcpwatch::kernel::{attach, btf};
use nix::sys::signal::{SigSet, Signal};

/// The floor object built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));

/// Attaches the floor, prints `ready` and holds it until SIGINT/SIGTERM.
pub fn run() -> anyhow::Result<()> {
    // Blocked before anything is attached, so a signal sent as soon as `ready`
    // is read is waited for, not fatal.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("blocking SIGINT/SIGTERM")?;
    let floor = load().context("loading the floor programs")?;
    println!("ready");
    set.wait().context("waiting for a signal")?;
    drop(floor);
    Ok(())
}

/// Loads and attaches the floor; detached when dropped.
fn load() -> anyhow::Result<Ebpf> {
    if OBJECT.is_empty() {
        bail!("the floor's eBPF object is empty: this binary was built with AYA_BUILD_SKIP=1");
    }
    let kernel_btf = btf::KernelBtf::running()?;
    let resolved = btf::resolve(&kernel_btf)?;
    drop(kernel_btf);
    let aya_btf = Btf::from_sys_fs()?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&aya_btf))
        .override_global("ORIG_AX", &resolved.offsets.regs_orig_ax, true)
        .load(OBJECT)?;
    attach::attach_all(&mut ebpf, &aya_btf, false)?;
    Ok(ebpf)
}
