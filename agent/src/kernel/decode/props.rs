//! Properties of the kernel-record decoder: any bytes of any kind and length
//! decode or give an error that says why (the length it had and needed, the
//! kind it did not know); a record cut anywhere is refused exactly when it
//! lacks bytes; what a record was built from comes back.

use proptest::prelude::*;

use super::tests::{bytes_of, exec_record, raw_header, sys_record_with};
use super::*;
use crate::proptesting::config;

const KINDS: [EventKind; 8] = [
    EventKind::Exec,
    EventKind::Fork,
    EventKind::Exit,
    EventKind::File,
    EventKind::Net,
    EventKind::Dns,
    EventKind::Risky,
    EventKind::Stdio,
];

fn kind_raw() -> impl Strategy<Value = u32> {
    prop_oneof![4 => prop::sample::select(&KINDS[..]).prop_map(|k| k as u32), 1 => any::<u32>()]
}

/// A record whose fixed part is random but whose lengths are small, so the
/// payload is sometimes long enough: (record, bytes it needs).
fn shaped() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let sys = (
        prop::sample::select(&KINDS[3..]),
        any::<[u8; size_of::<SysEvent>()]>(),
        (0u16..64, 0u16..64, 0u32..64),
        prop::sample::select(&[AF_INET, AF_INET6, AF_UNIX, 0, 0xffff][..]),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(kind, fixed, (l1, l2, ld), family, tail)| {
            let mut e: SysEvent = read(&fixed, "fixed").expect("sized");
            e.header.kind = kind as u32;
            (e.len1, e.len2, e.data_len, e.addr.family) = (l1, l2, ld, family);
            let mut b = bytes_of(&e);
            b.extend(tail);
            (b, size_of::<SysEvent>() + (l1 + l2) as usize + ld as usize)
        });
    let exec = (
        any::<[u8; size_of::<ExecEvent>()]>(),
        (0u32..600, 0u32..600, 0u32..40, 0u32..40, 0u32..80),
        prop::collection::vec(any::<u8>(), 0..1300),
    )
        .prop_map(|(fixed, (fl, il, el, cl, al), tail)| {
            let mut e: ExecEvent = read(&fixed, "fixed").expect("sized");
            e.header.kind = EventKind::Exec as u32;
            (e.filename_len, e.interp_len, e.exe_len, e.cwd_len, e.argv_len) = (fl, il, el, cl, al);
            let mut b = bytes_of(&e);
            b.extend(tail);
            let need = size_of::<ExecEvent>() + 2 * EXEC_FILENAME_MAX + (el + cl + al) as usize;
            (b, need)
        });
    prop_oneof![sys, exec]
}

/// What holds of any decoded record, and of any error.
fn sound(bytes: &[u8], got: &Result<Event, DecodeError>) -> Result<(), TestCaseError> {
    match got {
        Err(DecodeError::TooShort { len, need, .. }) => {
            prop_assert_eq!(*len, bytes.len());
            prop_assert!(need > len, "{got:?}");
        }
        Err(DecodeError::TooLong { len, max, .. }) => prop_assert!(len > max, "{got:?}"),
        Err(DecodeError::UnknownKind(k)) => {
            prop_assert_eq!(
                Some(*k),
                bytes.get(..4).map(|b| u32::from_ne_bytes(b.try_into().expect("4")))
            );
            prop_assert!(EventKind::from_u32(*k).is_none());
        }
        Ok(ev) => {
            let h = ev.header();
            prop_assert_eq!(h.kind as u32, u32::from_ne_bytes(bytes[..4].try_into().expect("4")));
            prop_assert!(!h.comm.contains('\0') && h.comm.len() <= 3 * 16);
            match ev {
                Event::Exec(e) => {
                    prop_assert!(!e.filename.contains('\0'));
                    prop_assert!(e.argv.iter().all(|a| !a.contains('\0')));
                    prop_assert!(e.argv.iter().map(|a| a.len() + 1).sum::<usize>() <= 3 * bytes.len());
                }
                Event::Sys(s) => {
                    prop_assert!(s.path.iter().chain(&s.path2).chain(&s.base).all(|p| !p.contains('\0')));
                    prop_assert!(s.data.len() <= bytes.len());
                    prop_assert!(!s.compat || s.syscall.is_none());
                }
                Event::Stdio(c) => {
                    prop_assert!(c.fd <= 1);
                    prop_assert!(c.data.len() <= bytes.len());
                }
                Event::Fork(_) | Event::Exit(_) => {}
            }
        }
    }
    Ok(())
}

fn nul_free() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,40}"
}

proptest! {
    #![proptest_config(config(2048))]

    /// Any bytes, any kind, any length: an event, or an error that says why.
    #[test]
    fn any_record_decodes_or_says_why(
        kind in kind_raw(),
        mut bytes in prop::collection::vec(any::<u8>(), 0..1800),
    ) {
        if bytes.len() >= 4 {
            bytes[..4].copy_from_slice(&kind.to_ne_bytes());
        }
        sound(&bytes, &decode(&bytes))?;
    }

    /// A record cut anywhere is refused exactly when it lacks bytes it
    /// declares; with them all, bytes beyond change nothing.
    #[test]
    fn a_cut_record_is_refused_exactly_when_short((bytes, need) in shaped()) {
        let full = decode(&bytes);
        sound(&bytes, &full)?;
        for n in [0, 4, need.saturating_sub(1), need, need + 1, bytes.len().saturating_sub(1)] {
            let Some(cut) = bytes.get(..n) else { continue };
            let got = decode(cut);
            sound(cut, &got)?;
            if let Err(DecodeError::TooLong { .. }) = &full {
                prop_assert!(n < size_of::<ExecEvent>() || got == full, "{n}: {got:?}");
            } else if n < need {
                prop_assert!(matches!(got, Err(DecodeError::TooShort { .. })), "{n} < {need}: {got:?}");
            } else if let Ok(ev) = &full {
                prop_assert_eq!(got.as_ref().ok(), Some(ev));
            }
        }
    }

    /// A syscall record's paths, address and data come back as built.
    #[test]
    fn a_syscall_record_comes_back(
        kind in prop::sample::select(&KINDS[3..]),
        nr in 0u32..470,
        (family, addr) in (prop::sample::select(&[AF_INET, AF_INET6, AF_UNIX][..]), any::<[u8; 16]>()),
        p1 in nul_free(),
        p2 in nul_free(),
        data in prop::collection::vec(any::<u8>(), 0..64),
        flags in any::<u32>(),
    ) {
        let rec = sys_record_with(kind, nr, (family, addr), [p1.as_bytes(), p2.as_bytes(), &data], flags, |_| {});
        let got = decode(&rec);
        sound(&rec, &got)?;
        match got.map_err(|e| TestCaseError::fail(e.to_string()))? {
            Event::Stdio(c) => {
                prop_assert_eq!(kind, EventKind::Stdio);
                prop_assert_eq!(c.data, data);
                prop_assert_eq!(c.fd, u32::from(flags & SYS_DATA_IN == 0));
            }
            Event::Sys(s) => {
                prop_assert_eq!(s.header.kind, kind);
                let unix = family == AF_UNIX;
                prop_assert_eq!(s.path.as_deref(), (!p1.is_empty() && !unix).then_some(p1.as_str()));
                prop_assert_eq!(s.path2.as_deref(), (!p2.is_empty()).then_some(p2.as_str()));
                let relative = flags & SYS_PATH_RELATIVE != 0;
                prop_assert_eq!(s.data.as_slice(), if relative { &[][..] } else { &data[..] });
                match (family, s.addr) {
                    (AF_INET, Some(Addr::Ip { ip, port: 443, mapped: false })) => {
                        prop_assert_eq!(ip, IpAddr::from([addr[0], addr[1], addr[2], addr[3]]));
                    }
                    (AF_INET6, Some(Addr::Ip { ip, port: 443, mapped })) => {
                        let v6 = Ipv6Addr::from(addr);
                        prop_assert_eq!(ip, v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4));
                        prop_assert_eq!(mapped, v6.to_ipv4_mapped().is_some());
                    }
                    (AF_UNIX, Some(Addr::Unix { path, .. })) => prop_assert_eq!(path, p1),
                    (f, a) => return Err(TestCaseError::fail(format!("family {f}: {a:?}"))),
                }
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    /// An exec record's file name, interpreter and arguments come back as built.
    #[test]
    fn an_exec_record_comes_back(
        filename in "[^\u{0}]{1,100}",
        interp in "[^\u{0}]{0,100}",
        argv in prop::collection::vec(nul_free(), 0..6),
    ) {
        prop_assume!(filename.len() <= EXEC_FILENAME_MAX && interp.len() <= EXEC_FILENAME_MAX);
        let area: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
        let rec = exec_record(filename.as_bytes(), interp.as_bytes(), &area, 0);
        let Ok(Event::Exec(e)) = decode(&rec) else {
            return Err(TestCaseError::fail("not an exec"));
        };
        prop_assert_eq!(e.filename, filename);
        prop_assert_eq!(e.interp, (!interp.is_empty()).then_some(interp));
        // An empty last argument is indistinguishable from the area's end.
        let mut want = argv.clone();
        if want.len() == 1 && want[0].is_empty() {
            want.clear();
        }
        prop_assert_eq!(e.argv, want);
        prop_assert_eq!(e.header.comm, text(&raw_header(EventKind::Exec).comm));
    }
}
