//! One module per hook family.

pub mod process;
