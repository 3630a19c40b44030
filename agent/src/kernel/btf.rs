//! Kernel structure offsets from the running kernel's BTF.
//!
//! Rust eBPF programs get no CO-RE relocations, so every field a probe reads is
//! resolved here at start-up and handed to the programs through the `OFFSETS`
//! global. A probe that needs a new field adds one line to [`FIELDS`].
//!
//! aya-obj parses BTF too but keeps struct members private; btf-rs (the parser
//! retis uses) exposes them, so it is used here.

use std::path::{Path, PathBuf};

use agent_common::{KernelOffsets, offsets::OFFSET_MISSING};
use btf_rs::{Btf, Type};

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(
        "cannot read kernel BTF from {path}: {source} (mcpwatch needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: anyhow::Error,
    },
    #[error("kernel BTF has no struct {strukt}")]
    MissingStruct { strukt: &'static str },
    #[error("kernel BTF has no field {strukt}.{field}")]
    MissingField { strukt: &'static str, field: &'static str },
    #[error("{strukt}.{field} is a bitfield, which the probes cannot read")]
    Bitfield { strukt: &'static str, field: &'static str },
    #[error("malformed kernel BTF around {strukt}.{field}: {source}")]
    Malformed {
        strukt: &'static str,
        field: &'static str,
        #[source]
        source: anyhow::Error,
    },
}

mod fields;

pub use fields::{FIELDS, IO_URING_OPERANDS, IO_URING_OPS, Need, Slot};

/// A parsed BTF blob.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// The running kernel's BTF.
    pub fn running() -> Result<Self, OffsetError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self, OffsetError> {
        Btf::from_file(path)
            .map(|btf| Self { btf })
            .map_err(|source| OffsetError::Read {
                path: path.to_owned(),
                source,
            })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OffsetError> {
        Btf::from_bytes(bytes)
            .map(|btf| Self { btf })
            .map_err(|source| OffsetError::Read {
                path: "<bytes>".into(),
                source,
            })
    }

    /// Byte offset of `strukt.field`, looking through anonymous struct and union
    /// members (mm_struct keeps most fields in one).
    pub fn member_offset(&self, strukt: &'static str, field: &'static str) -> Result<u32, OffsetError> {
        let types = self
            .btf
            .resolve_types_by_name(strukt)
            .map_err(|_| OffsetError::MissingStruct { strukt })?;
        let Some(Type::Struct(s)) = types
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
        else {
            return Err(OffsetError::MissingStruct { strukt });
        };
        match self.find_member(&s, field, 0, strukt, 0)? {
            Some(bits) if bits % 8 == 0 => Ok(bits / 8),
            Some(_) => Err(OffsetError::Bitfield { strukt, field }),
            None => Err(OffsetError::MissingField { strukt, field }),
        }
    }

    /// Bit offset of `field` in `s` (plus `base`), searching anonymous members.
    fn find_member(
        &self,
        s: &btf_rs::Struct,
        field: &'static str,
        base: u32,
        strukt: &'static str,
        depth: u32,
    ) -> Result<Option<u32>, OffsetError> {
        let malformed = |source| OffsetError::Malformed { strukt, field, source };
        for m in &s.members {
            let name = self.btf.resolve_name(m).map_err(malformed)?;
            if name == field {
                if m.bitfield_size().is_some_and(|b| b != 0) {
                    return Err(OffsetError::Bitfield { strukt, field });
                }
                return Ok(Some(base + m.bit_offset()));
            }
            if name.is_empty() && depth < 8 {
                let mut t = self.btf.resolve_chained_type(m).map_err(malformed)?;
                // Anonymous members may hide behind typedef/const/volatile.
                while let Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) = t {
                    let inner = t.as_btf_type().expect("chained type");
                    t = self.btf.resolve_chained_type(inner).map_err(malformed)?;
                }
                if let Type::Struct(inner) | Type::Union(inner) = t
                    && let Some(off) = self.find_member(&inner, field, base + m.bit_offset(), strukt, depth + 1)?
                {
                    return Ok(Some(off));
                }
            }
        }
        Ok(None)
    }
}

/// The outcome of resolving [`FIELDS`] against one BTF blob.
#[derive(Debug)]
pub struct Resolved {
    pub offsets: KernelOffsets,
    /// Features switched off because an optional field is missing.
    pub disabled: Vec<(String, OffsetError)>,
}

/// Resolves every probe field; a missing required field is an error.
pub fn resolve(btf: &KernelBtf) -> Result<Resolved, OffsetError> {
    let mut offsets = KernelOffsets::unresolved();
    let mut disabled = Vec::new();
    for (strukt, field, slot, need) in FIELDS {
        match btf.member_offset(strukt, field) {
            Ok(off) => *slot(&mut offsets) = off,
            Err(e) => match need {
                Need::Required => return Err(e),
                Need::Optional(feature) => {
                    *slot(&mut offsets) = OFFSET_MISSING;
                    disabled.push((feature.to_string(), e));
                }
            },
        }
    }
    Ok(Resolved { offsets, disabled })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal BTF blob writer: enough to describe structs of ints and
    /// pointers, nested anonymous members included.
    #[derive(Default)]
    struct BtfWriter {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    const KIND_INT: u32 = 1;
    const KIND_PTR: u32 = 2;
    const KIND_STRUCT: u32 = 4;
    const KIND_UNION: u32 = 5;

    impl BtfWriter {
        fn new() -> Self {
            Self {
                strings: vec![0],
                next_id: 1,
                ..Default::default()
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn head(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32) -> u32 {
            let name = self.str(name);
            for v in [name, (kind << 24) | vlen, size_or_type] {
                self.types.extend(v.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.head(name, KIND_INT, 0, size);
            self.types.extend((size * 8).to_le_bytes());
            id
        }

        fn ptr(&mut self, to: u32) -> u32 {
            self.head("", KIND_PTR, 0, to)
        }

        /// Members: (name, type id, byte offset).
        fn aggregate(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let names: Vec<u32> = members.iter().map(|(n, _, _)| self.str(n)).collect();
            let id = self.head(name, kind, members.len() as u32, size);
            for ((_, ty, off), n) in members.iter().zip(names) {
                for v in [n, *ty, off * 8] {
                    self.types.extend(v.to_le_bytes());
                }
            }
            id
        }

        fn finish(self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend(0xeb9fu16.to_le_bytes());
            b.extend([1u8, 0]);
            for v in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                b.extend(v.to_le_bytes());
            }
            b.extend(self.types);
            b.extend(self.strings);
            b
        }
    }

    /// Another kernel's BTF: every probe struct, laid out differently from the
    /// running kernel, `mm_struct` fields inside an anonymous struct, and
    /// optionally without `linux_binprm.interp`.
    fn other_kernel(with_interp: bool) -> Vec<u8> {
        let mut w = BtfWriter::new();
        let u32_ = w.int("unsigned int", 4);
        let u64_ = w.int("long unsigned int", 8);
        let vp = w.ptr(0);
        let mut structs: Vec<(&str, Vec<(&str, u32)>)> = Vec::new();
        for (strukt, field, _, _) in FIELDS {
            if *strukt == "mm_struct" || (*strukt == "linux_binprm" && *field == "interp" && !with_interp) {
                continue;
            }
            let ty = if [
                "pid",
                "tgid",
                "exit_code",
                "live",
                "max_fds",
                "len",
                "i_nlink",
                "skc_num",
            ]
            .contains(field)
            {
                u32_
            } else if field.starts_with("skc_") || *field == "i_mode" || *field == "type" || *field == "d_name" {
                u64_
            } else {
                vp
            };
            match structs.iter_mut().find(|(s, _)| s == strukt) {
                Some((_, m)) => m.push((field, ty)),
                None => structs.push((strukt, vec![(field, ty)])),
            }
        }
        for (strukt, members) in &structs {
            // 3000 bytes of padding first: no real kernel has these offsets.
            let m: Vec<(&str, u32, u32)> = members
                .iter()
                .enumerate()
                .map(|(i, (n, t))| (*n, *t, 3000 + 16 * i as u32))
                .collect();
            w.aggregate(KIND_STRUCT, strukt, 4096, &m);
        }
        let anon = w.aggregate(KIND_STRUCT, "", 64, &[("arg_start", u64_, 8), ("arg_end", u64_, 16)]);
        let un = w.aggregate(KIND_UNION, "", 64, &[("", anon, 0)]);
        w.aggregate(KIND_STRUCT, "mm_struct", 256, &[("mm_count", u32_, 0), ("", un, 100)]);
        w.finish()
    }

    #[test]
    fn offsets_come_from_the_btf_given_not_the_build_machine() {
        let other = KernelBtf::from_bytes(&other_kernel(true)).expect("synthetic BTF parses");
        let r = resolve(&other).expect("every field present");
        assert_eq!(r.offsets.task_pid, 3000);
        assert_eq!(r.offsets.task_tgid, 3016);
        assert!(r.disabled.is_empty(), "{:?}", r.disabled);
        // Nested anonymous union > struct: 100 + 8.
        assert_eq!(r.offsets.mm_arg_start, 108);
        assert_eq!(r.offsets.mm_arg_end, 116);
        if let Ok(running) = KernelBtf::running() {
            let mine = resolve(&running).unwrap().offsets;
            assert_ne!(mine, r.offsets, "a second BTF blob gives other offsets");
            assert_ne!(mine.task_pid, r.offsets.task_pid);
        }
    }

    #[test]
    fn a_missing_optional_field_switches_its_feature_off() {
        let other = KernelBtf::from_bytes(&other_kernel(false)).unwrap();
        let r = resolve(&other).expect("interp is optional");
        assert_eq!(r.offsets.binprm_interp, OFFSET_MISSING);
        assert_eq!(r.disabled.len(), 1);
        assert_eq!(r.disabled[0].0, "script interpreters");
        assert!(r.disabled[0].1.to_string().contains("linux_binprm.interp"));
    }

    #[test]
    fn a_missing_required_field_is_a_clear_error() {
        let mut w = BtfWriter::new();
        let u32_ = w.int("unsigned int", 4);
        w.aggregate(KIND_STRUCT, "task_struct", 64, &[("tgid", u32_, 4)]);
        let btf = KernelBtf::from_bytes(&w.finish()).unwrap();
        let err = resolve(&btf).unwrap_err();
        assert_eq!(err.to_string(), "kernel BTF has no field task_struct.pid");
        assert_eq!(btf.member_offset("task_struct", "tgid").unwrap(), 4);
    }

    #[test]
    fn running_kernel_offsets_resolve() {
        let Ok(btf) = KernelBtf::running() else {
            eprintln!("skipped: no {VMLINUX_BTF}");
            return;
        };
        let r = resolve(&btf).expect("required fields");
        let o = r.offsets;
        assert_ne!(o.task_pid, OFFSET_MISSING);
        // tgid directly follows pid in every kernel since 2.6.
        assert_eq!(o.task_tgid, o.task_pid + 4);
        // arg_start is inside mm_struct's anonymous struct.
        assert_ne!(o.mm_arg_start, OFFSET_MISSING);
        assert_eq!(o.mm_arg_end, o.mm_arg_start + 8);
    }
}
