//! The manifest parser and compiler: any text loads, or is refused with an
//! error placed in the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mcpwatch::policy::manifest::Manifest;

const FILE: &str = "/etc/mcpwatch/manifests/fuzz.json";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Manifest::parse(Path::new(FILE), text) {
        assert!(!e.what.is_empty(), "{e}");
        assert!(e.to_string().starts_with(FILE), "{e}");
    }
});
