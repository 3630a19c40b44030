//! The DNS parser: any bytes (pointer loops, truncations) give a bounded
//! message or none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpwatch::pipeline::dns::{NAME_MAX_OCTETS, parse};

fuzz_target!(|data: &[u8]| {
    if let Some(d) = parse(data) {
        assert!(d.name.len() <= 3 * NAME_MAX_OCTETS, "{} bytes", d.name.len());
        assert!(d.answers.len() <= 64);
        // Any prefix is that message's question or nothing.
        for n in 0..data.len() {
            if let Some(cut) = parse(&data[..n]) {
                assert_eq!(cut.name, d.name);
            }
        }
    }
});
