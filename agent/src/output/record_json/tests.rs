use proptest::prelude::*;
use serde_json::value::to_raw_value;

use super::*;
use crate::{
    pipeline::procs::{Proc, ProcTable},
    proptesting,
};

/// What serde_json makes of `r`, and what [`write`] does.
fn both(r: &Record<'_>) -> (String, String) {
    let mut mine = Vec::new();
    write(r, &mut mine).unwrap();
    (
        serde_json::to_string(r).unwrap(),
        String::from_utf8(mine).expect("a line is UTF-8"),
    )
}

/// Every field present (and each string `s`), exe and argv as given or
/// rendered once.
fn full<'a>(s: &'a str, argv: &'a [String], rendered: Option<&'a (Box<RawValue>, Box<RawValue>)>) -> Record<'a> {
    let mut detail = serde_json::Map::new();
    detail.insert(
        s.to_owned(),
        serde_json::json!({ "k": s, "n": [1, -2, 3.5, null, true] }),
    );
    detail.insert("duration_ns".into(), 7.into());
    Record {
        ts: s.into(),
        kind: "file",
        server: Some(s),
        pid: u32::MAX,
        ppid: 1,
        uid: 0,
        exe: rendered.map_or(Json::Value(s), |r| Json::Rendered(&r.0)),
        argv: rendered.map_or(Json::Value(argv), |r| Json::Rendered(&r.1)),
        proc_fields: None,
        tid: Some(2),
        gid: Some(3),
        comm: Some(s),
        filename: Some(s),
        interp: Some(s),
        argv_truncated: Some(true),
        ancestry: Some(vec![Ancestor { pid: 4, exe: s }, Ancestor { pid: 5, exe: "/bin/sh" }]),
        child_pid: Some(6),
        exit_code: Some(-1),
        signal: Some(i32::MIN),
        reason: Some(s),
        event_kind: Some(s),
        lost: Some(u64::MAX),
        probe: Some(s),
        cwd: Some(s),
        stdio: Some([s, "pipe", "tty"]),
        fileless: Some(false),
        written_then_exec: Some(true),
        op: Some("open"),
        syscall: Some("openat"),
        result: Some(i64::MIN),
        error: Some("ENOENT"),
        path: Some(s),
        path_as_given: Some(s),
        path_resolved: Some(true),
        path_truncated: Some(false),
        path2: Some(s),
        from_user_memory: true,
        access: Some(Access {
            read: true,
            write: true,
            attributes: true,
            ..Default::default()
        }),
        family: Some("inet6"),
        proto: Some("tcp"),
        addr: Some(s.to_owned()),
        port: Some(u16::MAX),
        local_port: Some(0),
        unix_path: Some(s),
        hostname: Some(s.to_owned()),
        exposed: Some(true),
        dns: Some(DnsRecord {
            direction: "answer",
            id: 9,
            name: s.to_owned(),
            qtype: "A".into(),
            answers: vec![s.to_owned()],
        }),
        risk: Some("ptrace"),
        target_pid: Some(8),
        note: Some("n"),
        tool: Some(s),
        call_id: Some(s),
        calls_in_flight: Some(usize::MAX),
        detail: Some(detail),
    }
}

fn rendered(s: &str, argv: &[String]) -> (Box<RawValue>, Box<RawValue>) {
    (to_raw_value(s).unwrap(), to_raw_value(argv).unwrap())
}

#[test]
fn every_field_is_written_as_serde_json_writes_it() {
    let argv = vec!["python3".to_owned(), "-c".to_owned(), String::new()];
    let r = rendered("/usr/bin/python3", &argv);
    for line in [full("/etc/passwd", &argv, None), full("x", &argv, Some(&r))] {
        let (serde, mine) = both(&line);
        assert_eq!(mine, serde);
    }
}

#[test]
fn absent_fields_are_left_out_as_serde_json_leaves_them() {
    let empty = Record::default();
    let (serde, mine) = both(&empty);
    assert_eq!(mine, serde);
    let fork = Record {
        kind: "fork",
        child_pid: Some(2),
        detail: Some(serde_json::Map::new()),
        ..Default::default()
    };
    let (serde, mine) = both(&fork);
    assert_eq!(mine, serde);
}

/// The program's own names, written without an escape check: none needs
/// escaping (the errno, syscall, op and kind names; the others are literals
/// at their one place).
#[test]
fn the_programs_own_names_need_no_escaping() {
    let errnos = (1..300).filter_map(|e| crate::pipeline::observe::errno_name(-e));
    let syscalls = agent_common::syscalls::ALL.iter().map(|s| s.name);
    let ops = agent_common::syscalls::Op::ALL.iter().map(|o| o.name());
    let kinds = agent_common::EventKind::ALL.iter().map(|k| k.name());
    let mut n = 0;
    for name in errnos.chain(syscalls).chain(ops).chain(kinds) {
        assert!(plain(name.as_bytes()), "{name:?}");
        n += 1;
    }
    assert!(n > 400, "{n} names");
}

/// All 128 combinations of an access's words (their texts made once).
#[test]
fn every_access_is_written_as_serde_json_writes_it() {
    for bits in 0..1 << 7 {
        let access = access_of(bits);
        assert_eq!(access_bits(access), bits);
        let (serde, mine) = both(&Record {
            access: Some(access),
            ..Default::default()
        });
        assert_eq!(mine, serde, "{access:?}");
    }
}

/// Each character up to U+00FF alone and between others, U+2028/9, the
/// replacement character and an astral one: the escaping is serde_json's.
#[test]
fn every_byte_and_odd_character_is_escaped_as_serde_json_escapes_it() {
    let odd = (0u32..=0xff)
        .chain([0x2028, 0x2029, 0xfffd, 0xfeff, 0x1f600])
        .filter_map(char::from_u32);
    for c in odd {
        for s in [c.to_string(), format!("/a{c}b/{c}{c}"), format!("{c}\u{1}\\\"")] {
            let (serde, mine) = both(&full(&s, &[], None));
            assert_eq!(mine, serde, "{c:?}");
        }
    }
}

/// The word-at-a-time check finds each byte that needs escaping at every
/// place of a word and of the tail, among plain bytes low and high.
#[test]
fn the_escape_check_sees_every_byte_at_every_place() {
    let escaped = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    for len in 1..=24 {
        for at in 0..len {
            for fill in [b'a', b' ', 0x7f, 0x80, 0xff, b'!', b']'] {
                for b in 0..=u8::MAX {
                    let mut s = vec![fill; len];
                    s[at] = b;
                    assert_eq!(plain(&s), !escaped(b), "byte {b:#x} at {at} of {len}, among {fill:#x}");
                }
            }
        }
    }
    assert!(plain(b""));
}

/// Bytes as the kernel gives them, repaired as the decoder repairs them.
fn repaired() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

proptest! {
    #![proptest_config(proptesting::config(512))]

    #[test]
    fn hostile_strings_make_the_line_serde_json_makes(
        s in prop_oneof![repaired(), proptesting::odd_text()],
        argv in prop::collection::vec(prop_oneof![repaired(), proptesting::odd_text()], 0..4),
        once in any::<bool>(),
    ) {
        let r = rendered(&s, &argv);
        let (serde, mine) = both(&full(&s, &argv, once.then_some(&r)));
        prop_assert_eq!(mine, serde);
    }

    /// A process's fields rendered once (`Proc::line_fields`) and copied
    /// into each of its lines, with the gid and comm of its first line or
    /// others: the line serde_json makes of the fields.
    #[test]
    fn a_processs_fields_rendered_once_make_the_line_serde_json_makes(
        exe in prop_oneof![repaired(), proptesting::odd_text()],
        argv in prop::collection::vec(prop_oneof![repaired(), proptesting::odd_text()], 0..4),
        (pid, ppid, uid, gid) in (any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()),
        comm in prop_oneof![repaired(), proptesting::odd_text()],
        first_ids in any::<bool>(),
        reparented in any::<bool>(),
    ) {
        // The table's ppid is not always the kernel's on the first line (a
        // reparenting between the table's read and the event): the text is
        // the line's.
        let table_ppid = if reparented { ppid.wrapping_add(7) } else { ppid };
        let mut table = ProcTable::default();
        table.insert(Proc { pid, ppid: table_ppid, uid, exe: exe.clone(), argv: argv.clone(), ..Default::default() });
        let p = table.get(pid).expect("inserted");
        let ids = Some((gid, comm.as_str()));
        // The first line renders the text, with or without its ids.
        let first = p.line_fields(pid, ppid, uid, first_ids.then_some((gid, comm.as_str())));
        prop_assert!(first.is_some_and(|t| t.ids == first_ids));
        let other_comm = format!("{comm}x");
        for (ids, tid, same) in [
            (ids, None, first_ids),
            (Some((gid.wrapping_add(1), comm.as_str())), None, false),
            (Some((gid, other_comm.as_str())), None, false),
            (None, Some(pid.wrapping_add(1)), false),
        ] {
            let fields = p.line_fields(pid, ppid, uid, ids);
            prop_assert_eq!(fields.map(|t| t.ids), Some(same));
            let (gid, comm) = ids.unwrap_or((gid, &comm));
            let line = Record {
                pid, ppid, uid, tid, gid: Some(gid), comm: Some(comm),
                exe: p.exe_json(), argv: p.argv_json(), proc_fields: fields,
                ..full("x", &[], None)
            };
            let (serde, mine) = both(&line);
            prop_assert_eq!(mine, serde);
        }
        // The kernel's pid, ppid or uid not the first line's: written one by one.
        prop_assert_eq!(p.line_fields(pid, ppid.wrapping_add(1), uid, ids), None);
        prop_assert_eq!(p.line_fields(pid, ppid, uid.wrapping_add(1), ids), None);
        prop_assert_eq!(p.line_fields(pid.wrapping_add(1), ppid, uid, ids), None);
    }
}
