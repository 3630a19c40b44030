//! Between the kernel and the judgement: which processes are servers
//! (`discovery`, `servers`), what is known of each process (`procs`), what
//! each event means, interpreted once into types (`observe`), the files each
//! server wrote (`history`), what a process runs (`launch`), the names DNS answers gave addresses (`dns`)
//! and the watched roots kept across restarts (`registrations`).

pub mod discovery;
pub mod dns;
pub mod history;
pub mod launch;
pub mod observe;
pub mod operation;
pub mod procs;
pub mod registrations;
pub mod servers;
pub mod tamper;
