//! The running agent: its event loop (`run`), the control socket the wrapper
//! and the CLI talk to (`control`) and the wrapper itself (`wrapper`).

pub mod control;
pub mod run;
pub mod wrapper;
