//! Types shared by the kernel programs (`agent-ebpf`) and the userspace agent.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of implicit padding, so the
//! same bytes mean the same thing on both sides of the ring buffer. With the
//! `user` feature the types implement `aya::Pod` so userspace can hand them to
//! maps and globals.
#![no_std]

pub mod abi;
pub mod cgroup_net;
pub mod config;
pub mod event;
pub mod io_uring;
pub mod kill;
pub mod offsets;
pub mod probe_errors;
pub mod syscalls;
pub mod tamper;

pub use config::{AgentConfig, WatchedProc};
pub use event::{EventHeader, EventKind, ExecEvent, ExitEvent, ForkEvent, LossKey, SockAddr, SysEvent};
pub use offsets::KernelOffsets;
