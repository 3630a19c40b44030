//! Kernel structure field offsets, resolved by userspace from the running
//! kernel's BTF and handed to the programs as a read-only global.
//!
//! Rust eBPF has no CO-RE relocations: a program must never read a kernel
//! structure through offsets baked at build time. Every field a probe reads is a
//! member here; a probe adds a field by adding a member and its BTF path in
//! `agent::btf`.

/// Marks an offset the running kernel does not have (the feature using it is off).
pub const OFFSET_MISSING: u32 = u32::MAX;

/// Byte offsets of kernel structure fields. All `u32`, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.signal`
    pub task_signal: u32,
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `signal_struct.live` (an `atomic_t`)
    pub signal_live: u32,
    /// `mm_struct.arg_start`
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`
    pub mm_arg_end: u32,
    /// `linux_binprm.filename`
    pub binprm_filename: u32,
    /// `linux_binprm.interp`
    pub binprm_interp: u32,
    /// Unused, keeps the struct a multiple of 8 bytes.
    pub _pad: u32,
}

impl KernelOffsets {
    /// All offsets missing; the state before userspace resolves them.
    pub const fn unresolved() -> Self {
        Self {
            task_pid: OFFSET_MISSING,
            task_tgid: OFFSET_MISSING,
            task_real_parent: OFFSET_MISSING,
            task_signal: OFFSET_MISSING,
            task_mm: OFFSET_MISSING,
            task_exit_code: OFFSET_MISSING,
            signal_live: OFFSET_MISSING,
            mm_arg_start: OFFSET_MISSING,
            mm_arg_end: OFFSET_MISSING,
            binprm_filename: OFFSET_MISSING,
            binprm_interp: OFFSET_MISSING,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C) struct of u32 without padding.
unsafe impl aya::Pod for KernelOffsets {}
