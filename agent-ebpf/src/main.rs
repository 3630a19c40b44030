//! mcpwatch kernel programs.
//!
//! One object holds every program; userspace loads it once, resolves kernel
//! structure offsets from BTF into [`maps::OFFSETS`] before loading, and
//! attaches the probes. Every probe starts with the watched-set lookup: an
//! unwatched process pays that one hash lookup and nothing more.
#![no_std]
#![no_main]

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
