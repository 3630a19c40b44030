#![no_std]
//! The benchmark's floor programs (the bin, `src/main.rs`): a library target
//! only so that mcpwatch-bench can name this crate as a build-dependency and
//! be rebuilt when it changes.
