//! Between the kernel and the judgement: which processes are servers
//! (`discovery`, `servers`), what is known of each process (`procs`), the
//! names DNS answers gave addresses (`dns`) and what a syscall means
//! (`sysview`).

pub mod discovery;
pub mod dns;
pub mod procs;
pub mod servers;
pub mod sysview;
