//! Decoding of hand-built records, field by field.

use super::*;
use agent_common::event::EXEC_ARGV_MAX;

pub(super) fn raw_header(kind: EventKind) -> EventHeader {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"node");
    EventHeader {
        kind: kind as u32,
        server: 7,
        ktime_ns: 42,
        pid: 101,
        tgid: 100,
        ppid: 1,
        uid: 1000,
        gid: 1000,
        flags: 0,
        comm,
    }
}

pub(super) fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: T is a plain repr(C) struct.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

pub(super) fn exec_record(filename: &[u8], interp: &[u8], argv: &[u8], flags: u32) -> Vec<u8> {
    let ev = ExecEvent {
        header: raw_header(EventKind::Exec),
        old_pid: 101,
        flags,
        filename_len: filename.len() as u32,
        interp_len: interp.len() as u32,
        argv_len: argv.len() as u32,
        argv_full_len: argv.len() as u32,
        exe_len: 12,
        cwd_len: 4,
        stdio: [FD_SOCKET, FD_SOCKET, FD_PIPE, 0],
        exe_nlink: 1,
    };
    let mut b = bytes_of(&ev);
    let mut data = vec![0u8; 2 * EXEC_FILENAME_MAX];
    data[..filename.len()].copy_from_slice(filename);
    data[EXEC_FILENAME_MAX..EXEC_FILENAME_MAX + interp.len()].copy_from_slice(interp);
    b.extend(data);
    b.extend(b"/usr/bin/das");
    b.extend(b"/tmp");
    b.extend(argv);
    b
}

#[test]
fn exec_decodes_every_field() {
    let rec = exec_record(b"/tmp/x.sh", b"/bin/sh", b"/bin/sh\0/tmp/x.sh\0--flag\0", 0);
    let Event::Exec(e) = decode(&rec).unwrap() else {
        panic!("not exec")
    };
    assert_eq!(e.header.kind, EventKind::Exec);
    assert_eq!(
        (e.header.pid, e.header.tid, e.header.ppid, e.header.server),
        (100, 101, 1, 7)
    );
    assert_eq!(e.header.comm, "node");
    assert_eq!(e.filename, "/tmp/x.sh");
    assert_eq!(e.interp.as_deref(), Some("/bin/sh"));
    assert_eq!(e.argv, ["/bin/sh", "/tmp/x.sh", "--flag"]);
    assert!(!e.argv_truncated);
    assert_eq!(e.exe.as_deref(), Some("/usr/bin/das"));
    assert_eq!(e.cwd.as_deref(), Some("/tmp"));
    assert_eq!(e.stdio, [FdKind::Socket, FdKind::Socket, FdKind::Pipe]);
    assert_eq!(e.exe_nlink, Some(1));
}

/// A syscall record: `(family, address)`, then path 1, path 2 and data.
fn sys_record(kind: EventKind, nr: u32, fam_addr: (u16, [u8; 16]), parts: [&[u8]; 3], flags: u32) -> Vec<u8> {
    sys_record_with(kind, nr, fam_addr, parts, flags, |_| {})
}

/// [`sys_record`] with the fixed part changed by `tweak` before encoding.
pub(super) fn sys_record_with(
    kind: EventKind,
    nr: u32,
    (family, addr): (u16, [u8; 16]),
    parts: [&[u8]; 3],
    flags: u32,
    tweak: impl FnOnce(&mut SysEvent),
) -> Vec<u8> {
    let [p1, p2, data] = parts;
    let ev = SysEvent {
        header: raw_header(kind),
        nr,
        flags,
        ret: -2,
        args: [3, 0, 0, 0, 0, 0],
        addr: agent_common::SockAddr {
            family,
            port: 443,
            sock_type: 1,
            flags: 0,
            addr,
        },
        stream_offset: 0,
        mode: 0,
        len1: p1.len() as u16,
        len2: p2.len() as u16,
        data_len: data.len() as u32,
        data_missing: 0,
        local_port: 0,
        _pad: [0; 2],
        target_pid: 0,
        file_ino: 0,
        file_dev: 0,
        _pad2: 0,
    };
    let mut ev = ev;
    tweak(&mut ev);
    let mut b = bytes_of(&ev);
    b.extend(p1);
    b.extend(p2);
    b.extend(data);
    b
}

#[test]
fn failed_relative_open_carries_its_base_directory() {
    let rec = sys_record(
        EventKind::File,
        syscalls::OPENAT,
        (0, [0; 16]),
        [b"../.ssh/id_rsa", b"", b"/home/u/work"],
        SYS_PATH_RELATIVE,
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert_eq!(s.name, "openat");
    assert_eq!(s.path.as_deref(), Some("../.ssh/id_rsa"));
    assert_eq!(s.base.as_deref(), Some("/home/u/work"));
    assert!(!s.resolved);
    assert!(s.data.is_empty());
    assert_eq!(s.ret, -2);
}

#[test]
fn ipv4_mapped_ipv6_is_normalised() {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&[127, 0, 0, 1]);
    let rec = sys_record(EventKind::Net, syscalls::CONNECT, (10, a), [b"", b"", b""], 0);
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert_eq!(
        s.addr,
        Some(Addr::Ip {
            ip: "127.0.0.1".parse().unwrap(),
            port: 443,
            mapped: true
        })
    );
    let mut v6 = [0u8; 16];
    v6[15] = 1;
    let rec = sys_record(EventKind::Net, syscalls::CONNECT, (10, v6), [b"", b"", b""], 0);
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert_eq!(s.addr.and_then(|a| a.ip()), Some("::1".parse().unwrap()));
}

#[test]
fn stdio_chunks_keep_offsets_and_gaps() {
    let mut rec = sys_record(
        EventKind::Stdio,
        syscalls::WRITE,
        (0, [0; 16]),
        [b"", b"", b"{\"jsonrpc\""],
        SYS_DATA_TRUNCATED,
    );
    // ret is the syscall's byte count.
    rec[size_of::<EventHeader>() + 8..size_of::<EventHeader>() + 16].copy_from_slice(&100i64.to_ne_bytes());
    let Event::Stdio(c) = decode(&rec).unwrap() else {
        panic!()
    };
    // Written on fd 3 (a duplicate of the wire): the server's stdout.
    assert_eq!(c.fd, 1);
    assert_eq!(c.len, 100);
    assert_eq!(c.data, b"{\"jsonrpc\"");
    assert!(c.truncated);
}

#[test]
fn truncated_argv_keeps_the_partial_argument_and_flag() {
    let argv = vec![b'a'; EXEC_ARGV_MAX];
    let rec = exec_record(b"/bin/echo", b"", &argv, EXEC_ARGV_TRUNCATED);
    let Event::Exec(e) = decode(&rec).unwrap() else {
        panic!("not exec")
    };
    assert!(e.argv_truncated);
    assert_eq!(e.interp, None);
    assert_eq!(e.argv.len(), 1);
    assert_eq!(e.argv[0].len(), EXEC_ARGV_MAX);
}

#[test]
fn short_and_unknown_records_are_errors() {
    let rec = exec_record(b"/bin/echo", b"", b"echo\0", 0);
    assert!(matches!(
        decode(&rec[..rec.len() - 3]),
        Err(DecodeError::TooShort { .. })
    ));
    assert!(matches!(decode(&[0u8; 8]), Err(DecodeError::TooShort { .. })));
    let mut h = raw_header(EventKind::Fork);
    h.kind = 999;
    assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(999)));
}

#[test]
fn fork_and_exit_decode() {
    let f = ForkEvent {
        header: raw_header(EventKind::Fork),
        child_tgid: 555,
        _pad: 0,
    };
    assert_eq!(
        decode(&bytes_of(&f)).unwrap(),
        Event::Fork(Fork {
            header: header(&f.header, EventKind::Fork),
            child_pid: 555
        })
    );
    let x = ExitEvent {
        header: raw_header(EventKind::Exit),
        exit_code: 3 << 8,
        _pad: 0,
    };
    let Event::Exit(e) = decode(&bytes_of(&x)).unwrap() else {
        panic!()
    };
    assert_eq!((e.exit_code, e.signal), (Some(3), None));
    assert_eq!(split_exit_code(9), (None, Some(9)));
}

#[test]
fn accept_local_port_and_stream_offset_have_their_own_fields() {
    let rec = sys_record_with(
        EventKind::Net,
        syscalls::ACCEPT4,
        (2, [0; 16]),
        [b"", b"", b""],
        0,
        |e| {
            e.local_port = 8080;
            e.stream_offset = 99;
        },
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert_eq!(s.local_port, Some(8080));
    assert_eq!(s.syscall.map(|c| c.op), Some(syscalls::Op::Accept));
    // A connect has no local port, whatever the other fields hold.
    let rec = sys_record_with(
        EventKind::Net,
        syscalls::CONNECT,
        (2, [0; 16]),
        [b"", b"", b""],
        0,
        |e| {
            e.local_port = 8080;
        },
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert_eq!(s.local_port, None);
    let rec = sys_record_with(
        EventKind::Stdio,
        syscalls::READ,
        (0, [0; 16]),
        [b"", b"", b"{}"],
        0,
        |e| {
            e.stream_offset = 4096;
            e.local_port = 1;
        },
    );
    let Event::Stdio(c) = decode(&rec).unwrap() else {
        panic!()
    };
    assert_eq!(c.offset, 4096);
}

#[test]
fn abstract_unix_name_is_a_flag_not_a_port() {
    let rec = sys_record_with(
        EventKind::Net,
        syscalls::CONNECT,
        (1, [0; 16]),
        [b"dbus", b"", b""],
        0,
        |e| {
            e.addr.port = 0;
            e.addr.flags = agent_common::event::SOCKADDR_ABSTRACT;
        },
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert_eq!(
        s.addr,
        Some(Addr::Unix {
            path: "dbus".into(),
            abstract_name: true
        })
    );
    // Port 1 no longer means anything for a Unix socket.
    let rec = sys_record_with(
        EventKind::Net,
        syscalls::CONNECT,
        (1, [0; 16]),
        [b"/run/x.sock", b"", b""],
        0,
        |e| {
            e.addr.port = 1;
        },
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert_eq!(
        s.addr,
        Some(Addr::Unix {
            path: "/run/x.sock".into(),
            abstract_name: false
        })
    );
}

#[test]
fn user_memory_flag_is_exposed() {
    let rec = sys_record(
        EventKind::File,
        syscalls::UNLINK,
        (0, [0; 16]),
        [b"/tmp/x", b"", b""],
        agent_common::event::SYS_USER_MEMORY,
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert!(s.from_user_memory);
    assert_eq!(s.name, "unlink");
    let rec = sys_record(
        EventKind::File,
        syscalls::OPENAT,
        (0, [0; 16]),
        [b"/etc/hosts", b"", b""],
        0,
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert!(!s.from_user_memory);
}

#[test]
fn a_compat_call_is_named_from_the_ia32_table_and_never_looked_up_as_x86_64() {
    // ia32 5 is open; x86_64 5 is fstat.
    let rec = sys_record(
        EventKind::Risky,
        5,
        (0, [0; 16]),
        [b"/etc/shadow", b"", b""],
        agent_common::event::SYS_COMPAT | agent_common::event::SYS_USER_MEMORY,
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert!(s.compat);
    assert_eq!((s.name, s.syscall), ("open", None));
    assert_eq!(s.path.as_deref(), Some("/etc/shadow"));
    let rec = sys_record(EventKind::File, 5, (0, [0; 16]), [b"", b"", b""], 0);
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert!(!s.compat);
    assert_eq!(s.name, "unknown", "x86_64 fstat is not followed");
}

#[test]
fn target_pid_has_its_own_field() {
    let rec = sys_record_with(
        EventKind::Risky,
        syscalls::PIDFD_GETFD,
        (0, [0; 16]),
        [b"/home/u/.ssh/id_ed25519", b"", b""],
        agent_common::event::SYS_PATH_RESOLVED,
        |e| e.target_pid = 4242,
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert_eq!((s.name, s.target_pid), ("pidfd_getfd", Some(4242)));
    let rec = sys_record(
        EventKind::Risky,
        syscalls::PIDFD_GETFD,
        (0, [0; 16]),
        [b"", b"", b""],
        0,
    );
    let Event::Sys(s) = decode(&rec).unwrap() else { panic!() };
    assert_eq!(s.target_pid, None, "0: not resolved");
}

/// Found by `props::a_cut_record_is_refused_exactly_when_short`: a file name
/// longer than its slot was reported as "record of 1120 bytes is too short
/// for a exec payload (1120 bytes)", the length it had as the one it needed.
#[test]
fn a_length_beyond_its_slot_is_named_as_such() {
    let mut rec = exec_record(b"/bin/true", b"", b"true\0", 0);
    let at = std::mem::offset_of!(ExecEvent, filename_len);
    rec[at..at + 4].copy_from_slice(&600u32.to_ne_bytes());
    assert_eq!(
        decode(&rec),
        Err(DecodeError::TooLong {
            what: "exec filename",
            len: 600,
            max: EXEC_FILENAME_MAX
        })
    );
    assert_eq!(
        decode(&rec).unwrap_err().to_string(),
        "exec filename of 600 bytes is longer than its slot (512 bytes)"
    );
}

#[test]
fn a_pending_process_syscall_record_is_told_from_its_header_alone() {
    let with = |kind, flags| {
        let mut h = raw_header(kind);
        h.flags = flags;
        bytes_of(&h)
    };
    for kind in [
        EventKind::File,
        EventKind::Net,
        EventKind::Dns,
        EventKind::Risky,
        EventKind::Stdio,
    ] {
        assert_eq!(pending_syscall_pid(&with(kind, EVENT_UNWATCHED)), Some(100), "{kind:?}");
        assert_eq!(
            pending_syscall_pid(&with(kind, 0)),
            None,
            "{kind:?} of a watched process"
        );
    }
    // Process lifecycle records decide the pending process: never dropped unread.
    for kind in [EventKind::Exec, EventKind::Fork, EventKind::Exit] {
        assert_eq!(pending_syscall_pid(&with(kind, EVENT_UNWATCHED)), None, "{kind:?}");
    }
    assert_eq!(
        pending_syscall_pid(&with(EventKind::File, EVENT_UNWATCHED)[..8]),
        None,
        "short"
    );
}
