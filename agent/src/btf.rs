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

/// Whether the agent can run without a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Start-up fails without it.
    Required,
    /// The feature using it is switched off, with a warning.
    Optional(&'static str),
}

type Slot = fn(&mut KernelOffsets) -> &mut u32;

/// Every field the probes read: struct, member, where it goes, and whether the
/// agent can do without it.
#[rustfmt::skip]
pub const FIELDS: &[(&str, &str, Slot, Need)] = &[
    ("task_struct", "pid", |o| &mut o.task_pid, Need::Required),
    ("task_struct", "tgid", |o| &mut o.task_tgid, Need::Required),
    ("task_struct", "real_parent", |o| &mut o.task_real_parent, Need::Required),
    ("task_struct", "signal", |o| &mut o.task_signal, Need::Required),
    ("task_struct", "mm", |o| &mut o.task_mm, Need::Optional("exec argv")),
    ("task_struct", "exit_code", |o| &mut o.task_exit_code, Need::Optional("exit codes")),
    ("signal_struct", "live", |o| &mut o.signal_live, Need::Required),
    ("mm_struct", "arg_start", |o| &mut o.mm_arg_start, Need::Optional("exec argv")),
    ("mm_struct", "arg_end", |o| &mut o.mm_arg_end, Need::Optional("exec argv")),
    ("linux_binprm", "filename", |o| &mut o.binprm_filename, Need::Required),
    ("linux_binprm", "interp", |o| &mut o.binprm_interp, Need::Optional("script interpreters")),
    ("task_struct", "files", |o| &mut o.task_files, Need::Required),
    ("task_struct", "fs", |o| &mut o.task_fs, Need::Optional("working directories")),
    ("files_struct", "fdt", |o| &mut o.files_fdt, Need::Required),
    ("fdtable", "fd", |o| &mut o.fdt_fd, Need::Required),
    ("fdtable", "max_fds", |o| &mut o.fdt_max_fds, Need::Required),
    ("file", "f_path", |o| &mut o.file_path, Need::Required),
    ("file", "f_inode", |o| &mut o.file_inode, Need::Required),
    ("file", "private_data", |o| &mut o.file_private, Need::Optional("socket details")),
    ("path", "mnt", |o| &mut o.path_mnt, Need::Required),
    ("path", "dentry", |o| &mut o.path_dentry, Need::Required),
    ("dentry", "d_parent", |o| &mut o.dentry_parent, Need::Required),
    ("dentry", "d_name", |o| &mut o.dentry_name, Need::Required),
    ("qstr", "name", |o| &mut o.qstr_name, Need::Required),
    ("qstr", "len", |o| &mut o.qstr_len, Need::Required),
    ("dentry", "d_inode", |o| &mut o.dentry_inode, Need::Required),
    ("vfsmount", "mnt_root", |o| &mut o.vfsmount_root, Need::Required),
    ("mount", "mnt", |o| &mut o.mount_mnt, Need::Required),
    ("mount", "mnt_parent", |o| &mut o.mount_parent, Need::Required),
    ("mount", "mnt_mountpoint", |o| &mut o.mount_mountpoint, Need::Required),
    ("inode", "i_mode", |o| &mut o.inode_mode, Need::Required),
    ("inode", "i_nlink", |o| &mut o.inode_nlink, Need::Optional("fileless exec detection")),
    ("fs_struct", "pwd", |o| &mut o.fs_pwd, Need::Optional("working directories")),
    ("linux_binprm", "file", |o| &mut o.binprm_file, Need::Optional("resolved exe paths")),
    ("socket", "type", |o| &mut o.socket_type, Need::Optional("socket details")),
    ("socket", "sk", |o| &mut o.socket_sk, Need::Optional("socket details")),
    ("sock_common", "skc_family", |o| &mut o.skc_family, Need::Optional("socket details")),
    ("sock_common", "skc_num", |o| &mut o.skc_num, Need::Optional("socket details")),
    ("sock_common", "skc_dport", |o| &mut o.skc_dport, Need::Optional("socket details")),
    ("sock_common", "skc_rcv_saddr", |o| &mut o.skc_rcv_saddr, Need::Optional("socket details")),
    ("sock_common", "skc_daddr", |o| &mut o.skc_daddr, Need::Optional("socket details")),
    ("sock_common", "skc_v6_rcv_saddr", |o| &mut o.skc_v6_rcv_saddr, Need::Optional("socket details")),
    ("sock_common", "skc_v6_daddr", |o| &mut o.skc_v6_daddr, Need::Optional("socket details")),
    ("pt_regs", "di", |o| &mut o.regs_di, Need::Required),
    ("pt_regs", "si", |o| &mut o.regs_si, Need::Required),
    ("pt_regs", "dx", |o| &mut o.regs_dx, Need::Required),
    ("pt_regs", "r10", |o| &mut o.regs_r10, Need::Required),
    ("pt_regs", "r8", |o| &mut o.regs_r8, Need::Required),
    ("pt_regs", "r9", |o| &mut o.regs_r9, Need::Required),
    ("pt_regs", "orig_ax", |o| &mut o.regs_orig_ax, Need::Required),
];

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
