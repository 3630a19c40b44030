//! `mcpwatch offsets`: the kernel structure offsets the probes would use.

use std::path::PathBuf;

use anyhow::Context as _;
use mcpwatch::kernel::btf;

#[derive(clap::Args)]
pub struct OffsetsArgs {
    /// BTF file to resolve against (default: the running kernel's).
    #[arg(long, value_name = "PATH", default_value = btf::VMLINUX_BTF)]
    btf: PathBuf,
}

pub fn run(args: OffsetsArgs) -> anyhow::Result<()> {
    let kb = btf::KernelBtf::from_file(&args.btf)?;
    let r = btf::resolve(&kb).with_context(|| format!("resolving offsets in {}", args.btf.display()))?;
    for (feature, why) in &r.disabled {
        eprintln!("warning: {feature} would be off: {why}");
    }
    println!("{:#?}", r.offsets);
    Ok(())
}
