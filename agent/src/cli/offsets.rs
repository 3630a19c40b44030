//! `mcpwatch offsets`: the kernel structure offsets the probes would use, as
//! one JSON object (`struct.field` -> byte offset, `null` where this kernel
//! lacks the field) and the features a missing field switches off.

use std::path::PathBuf;

use anyhow::Context as _;
use mcpwatch::kernel::btf;
use serde_json::{Map, Value, json};

#[derive(clap::Args)]
pub struct OffsetsArgs {
    /// BTF file to resolve against (default: the running kernel's).
    #[arg(long, value_name = "PATH", default_value = btf::VMLINUX_BTF)]
    btf: PathBuf,
}

pub fn run(args: OffsetsArgs) -> anyhow::Result<()> {
    let kb = btf::KernelBtf::from_file(&args.btf)?;
    let r = btf::resolve(&kb).with_context(|| format!("resolving offsets in {}", args.btf.display()))?;
    println!("{}", serde_json::to_string_pretty(&render(&r))?);
    Ok(())
}

fn render(r: &btf::Resolved) -> Value {
    let mut offsets = Map::new();
    for (strukt, field, slot, _) in btf::FIELDS {
        // The table's slot hands out the field it fills; read it from a copy.
        let mut o = r.offsets;
        let v = *slot(&mut o);
        let v = if v == agent_common::offsets::OFFSET_MISSING {
            Value::Null
        } else {
            v.into()
        };
        offsets.insert(format!("{strukt}.{field}"), v);
    }
    let disabled: Vec<Value> = r
        .disabled
        .iter()
        .map(|(feature, why)| json!({ "feature": feature, "why": why.to_string() }))
        .collect();
    json!({ "offsets": offsets, "disabled": disabled })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_named_once_and_missing_ones_are_null() {
        let mut offsets = agent_common::offsets::KernelOffsets::unresolved();
        offsets.task_pid = 3000;
        let r = btf::Resolved {
            offsets,
            disabled: Vec::new(),
        };
        let v = render(&r);
        let o = v["offsets"].as_object().unwrap();
        assert_eq!(o.len(), btf::FIELDS.len(), "a name given twice in the table");
        assert_eq!(o["task_struct.pid"], 3000);
        assert!(o["linux_binprm.interp"].is_null(), "unresolved is shown as null");
    }
}
