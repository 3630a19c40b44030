//! One module per hook family. `syscalls` is the sys_exit
//! dispatcher feeding `file`, `network` (with DNS), `risky` and `stdio`.

pub mod cgroup_net;
pub mod file;
pub mod io_uring;
pub mod kill;
pub mod network;
pub mod process;
pub mod risky;
pub mod stdio;
pub mod syscalls;
pub mod tamper;
