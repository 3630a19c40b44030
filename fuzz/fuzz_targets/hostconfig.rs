//! Host configurations (JSON with comments and trailing commas): servers, or
//! an error placed in the file; commands and arguments are text of the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mcpwatch::policy::hostconfig::{HostConfigError, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(Path::new("/h/.cursor/mcp.json"), text) {
        Ok(servers) => {
            // Stripping comments never invents text: without escapes, what a
            // server runs is written in the file as it is.
            for s in servers.iter().filter(|_| !text.contains('\\')) {
                assert!(text.contains(s.command.as_str()), "{s:?}");
            }
        }
        Err(HostConfigError::Json { line, .. }) => assert!(line >= 1),
        Err(e) => panic!("not a JSON error: {e}"),
    }
});
