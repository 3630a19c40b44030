//! The kernel-record decoder: any bytes decode, or give an error that says
//! why; decoded text holds no NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpwatch::kernel::decode::{DecodeError, Event, decode};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Err(DecodeError::TooShort { len, need, .. }) => assert!(len == data.len() && need > len),
        Err(DecodeError::TooLong { len, max, .. }) => assert!(len > max),
        Err(DecodeError::UnknownKind(_)) => {}
        Ok(ev) => {
            assert!(!ev.header().comm.contains('\0'));
            match ev {
                Event::Exec(e) => assert!(!e.filename.contains('\0') && e.argv.iter().all(|a| !a.contains('\0'))),
                Event::Sys(s) => assert!(s.path.iter().chain(&s.path2).all(|p| !p.contains('\0'))),
                Event::Stdio(c) => assert!(c.fd <= 1 && c.data.len() <= data.len()),
                Event::Fork(_) | Event::Exit(_) => {}
            }
        }
    }
});
