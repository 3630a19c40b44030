//! mcpwatch kernel programs.
//!
//! One object holds every program; userspace loads it once, resolves kernel
//! structure offsets from BTF into [`maps::OFFSETS`] before loading, and
//! attaches the probes. Every probe starts with the watched-set lookup: an
//! unwatched process pays that one hash lookup and nothing more.
#![no_std]
#![no_main]

/// Zeroes each field with its own volatile store: plain stores of zeroes
/// next to each other are merged by LLVM into a call of a byte-wise `memset`
/// subprogram (a loop of four instructions per byte).
#[macro_export]
macro_rules! zero {
    ($($field:expr),* $(,)?) => {
        $({
            let field = &mut $field;
            // SAFETY: a store through an exclusive reference.
            unsafe { core::ptr::write_volatile(field, 0) };
        })*
    };
}

mod emit;
mod kernel;
mod maps;
mod probes;
mod record;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
