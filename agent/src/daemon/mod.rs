//! The running agent: its event loop (`run`), its state and the pass each
//! event takes (`agent`), what is watched (`watch`), its periodic reports
//! (`report`), what the next agent needs to read the kept kernel
//! objects (`handover`), the control socket the wrapper and the CLI talk to
//! (`control`) with what `mcpwatch top` reads (`top`) and the wrapper itself (`wrapper`); `bounds`: what servers
//! may leave behind (names per user, forgetting exited servers).

mod agent;
mod bounds;
pub mod control;
mod gate;
mod gating;
pub mod handover;
mod notify;
pub mod privileges;
mod report;
mod requests;
pub mod run;
pub mod top;
mod watch;
pub mod wrapper;
