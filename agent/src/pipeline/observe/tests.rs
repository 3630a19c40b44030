use agent_common::{
    EventKind,
    syscalls::{self, *},
};

use super::*;
use crate::kernel::decode::{Exec, Header};

fn header(kind: EventKind, pid: u32) -> Header {
    Header::for_test(kind, 1, pid)
}

fn sys(nr: u32, args: [u64; 6], path: Option<&str>, ret: i64) -> Sys {
    Sys {
        header: header(EventKind::File, 42),
        nr,
        name: "x",
        ret,
        args,
        path: path.map(str::to_owned),
        resolved: false,
        path_truncated: false,
        path2: None,
        path2_truncated: false,
        base: Some("/work".into()),
        addr: None,
        sock_type: 0,
        local_port: None,
        mode: 0,
        data: Vec::new(),
        incoming: false,
        syscall: syscalls::lookup(nr),
        compat: false,
        target_pid: None,
        file_id: None,
        from_user_memory: false,
    }
}

fn exec_event(filename: &str, argv: &[&str], nlink: u32) -> Exec {
    Exec {
        header: header(EventKind::Exec, 42),
        old_tid: 42,
        filename: filename.into(),
        filename_truncated: false,
        interp: None,
        interp_truncated: false,
        argv: argv.iter().map(|a| a.to_string()).collect(),
        argv_truncated: false,
        exe: None,
        exe_truncated: false,
        exe_nlink: Some(nlink),
        cwd: Some("/srv".into()),
        cwd_truncated: false,
        stdio: [FdKind::Pipe; 3],
    }
}

fn no_stdio(_: u32, _: FdKind) -> Option<StdioKind> {
    None
}

#[test]
fn an_exec_through_a_proc_fd_path_is_fileless_for_the_line_and_the_policy_alike() {
    // The kernel sees a file with links (the fd's file), the path says memory.
    let e = exec_event("/proc/self/fd/3", &["x"], 1);
    let o = exec(&e, "/proc/self/fd/3".into(), |_| false, &no_stdio);
    assert!(o.act.fileless, "one fileless for the line and the judgement");
    let memfd = exec(
        &exec_event("/tmp/x", &["x"], 0),
        "/memfd:x (deleted)".into(),
        |_| false,
        &no_stdio,
    );
    assert!(memfd.act.fileless);
    let plain = exec(
        &exec_event("/usr/bin/ls", &["ls"], 1),
        "/usr/bin/ls".into(),
        |_| false,
        &no_stdio,
    );
    assert!(!plain.act.fileless);
}

#[test]
fn write_then_exec_names_the_written_file_the_exec_path_or_the_script() {
    let wrote = |p: &str| p == "/srv/drop.sh";
    let e = exec_event("./drop.sh", &["./drop.sh"], 1);
    let o = exec(&e, "/usr/bin/bash".into(), wrote, &no_stdio);
    assert!(o.act.written_by_server);
    assert_eq!(
        written_file("./drop.sh", "/usr/bin/bash", &e.argv, Some("/srv"), wrote),
        Some("/srv/drop.sh".into())
    );
    // A script handed to an interpreter (through env) is named, not the interpreter.
    let argv: Vec<String> = ["env", "-i", "python3", "drop.sh"].map(String::from).to_vec();
    assert_eq!(
        written_file("/usr/bin/env", "/usr/bin/env", &argv, Some("/srv"), wrote),
        Some("/srv/drop.sh".into())
    );
    // Data given to a program that runs no scripts is not its code.
    let argv: Vec<String> = ["cat", "drop.sh"].map(String::from).to_vec();
    assert_eq!(
        written_file("/usr/bin/cat", "/usr/bin/cat", &argv, Some("/srv"), wrote),
        None
    );
}

#[test]
fn opens_are_read_with_their_access_and_absolute_path() {
    // openat(AT_FDCWD, "../etc/x", O_RDWR|O_CREAT|O_APPEND)
    let s = sys(OPENAT, [0, 0, 2 | 0o100 | 0o2000, 0, 0, 0], Some("../etc/x"), 3);
    let SysObservation::File(f) = super::sys(&s, |_| None) else {
        panic!("a file observation")
    };
    assert_eq!(f.op_name(), "open");
    assert_eq!(f.path.as_deref(), Some("/etc/x"));
    assert_eq!(f.access.words(), ["read", "write", "create", "append"]);
    assert_eq!(f.written(3), Some("/etc/x"));
    assert_eq!(f.written(-13), None, "a failed write changed nothing");
    let f_access = f.access;
    let acts = activities(SysObservation::File(f), &s);
    let [Activity::File(a)] = acts.as_slice() else {
        panic!("{acts:?}")
    };
    assert_eq!(a.access, f_access);
}

#[test]
fn rmdir_is_an_unlink_of_a_directory_both_ways() {
    let plain = sys(RMDIR, [0; 6], Some("/w/d"), 0);
    let at = sys(UNLINKAT, [0, 0, AT_REMOVEDIR, 0, 0, 0], Some("/w/d"), 0);
    for s in [plain, at] {
        let SysObservation::File(f) = super::sys(&s, |_| None) else {
            panic!()
        };
        assert_eq!((f.op, f.op_name()), (FileOp::Unlink, "rmdir"));
        assert_eq!(f.access.words(), ["write", "directory"]);
    }
}

#[test]
fn a_rename_remembers_its_new_name_as_written() {
    let mut s = sys(RENAMEAT, [0; 6], Some("a.tmp"), 0);
    s.path2 = Some("../bin/tool".into());
    let SysObservation::File(f) = super::sys(&s, |_| None) else {
        panic!()
    };
    assert_eq!(f.target.as_deref(), Some("/bin/tool"));
    assert_eq!(f.written(0), Some("/bin/tool"));
}

#[test]
fn another_process_proc_files_are_risky_and_own_ones_are_not() {
    let s = sys(OPENAT, [0; 6], Some("/proc/1/environ"), 3);
    let acts = activities(super::sys(&s, |_| None), &s);
    assert!(matches!(
        acts.first(),
        Some(Activity::Risky(RiskyActivity {
            op: RiskyOp::ProcEnviron,
            target_pid: Some(1)
        }))
    ));
    let own = sys(OPENAT, [0; 6], Some("/proc/42/mem"), 3);
    let SysObservation::File(f) = super::sys(&own, |_| None) else {
        panic!()
    };
    assert_eq!(f.other_proc, None);
}

#[test]
fn connects_carry_family_proto_and_the_dns_name() {
    let mut s = sys(CONNECT, [0; 6], None, 0);
    s.sock_type = 1;
    s.addr = Some(Addr::Ip {
        ip: "10.1.2.3".parse().unwrap(),
        port: 443,
        mapped: false,
    });
    let o = super::sys(&s, |ip| {
        (ip.to_string() == "10.1.2.3").then(|| "api.example.com".to_owned())
    });
    let SysObservation::Net(n) = &o else { panic!() };
    assert_eq!((n.family, n.proto), (Some("inet"), Some("tcp")));
    assert_eq!(n.hostname.as_deref(), Some("api.example.com"));
    let acts = activities(o, &s);
    let [Activity::Net(a)] = acts.as_slice() else {
        panic!("{acts:?}")
    };
    assert_eq!((a.op, a.proto, a.port), (NetOp::Connect, Proto::Tcp, 443));
    assert_eq!(a.hostname.as_deref(), Some("api.example.com"));
}

#[test]
fn normalizes() {
    assert_eq!(normalize("/home/u/work/../.ssh/./id_rsa"), "/home/u/.ssh/id_rsa");
    assert_eq!(normalize("/../.."), "/");
    for (given, normal) in [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a//b", "/a/b"),
        ("/a/b/", "/a/b"),
        ("/a/.", "/a"),
        ("/a/..", "/"),
        ("/a/.b/..c", "/a/.b/..c"),
        ("a/b", "/a/b"),
    ] {
        assert_eq!(normalize(given), normal, "{given}");
    }
}

#[test]
fn errno_names() {
    assert_eq!(errno_name(-2), Some("ENOENT"));
    assert_eq!(errno_name(-111), Some("ECONNREFUSED"));
    assert_eq!(errno_name(-100_000), Some("UnknownErrno"));
    assert_eq!(errno_name(3), None);
}

#[test]
fn a_write_older_than_the_window_counts_for_neither_the_line_nor_the_judgement() {
    // One history decides: the line's `written_then_exec` and the alert both
    // read `written_by_server`, and the engine keeps no history of its own.
    let mut h = crate::pipeline::history::WriteHistory::default();
    h.record(1, "/srv/drop", 0, None);
    let e = exec_event("/srv/drop", &["/srv/drop"], 1);
    let within = exec(&e, "/srv/drop".into(), |p| h.recent(1, p, 1_000), &no_stdio);
    assert_eq!(within.act.written_path.as_deref(), Some("/srv/drop"));
    let late = crate::pipeline::history::WriteHistory::WINDOW_NS + 1;
    let after = exec(&e, "/srv/drop".into(), |p| h.recent(1, p, late), &no_stdio);
    assert!(!after.act.written_by_server && after.act.written_path.is_none());
}

#[test]
fn a_stolen_descriptor_names_the_process_it_was_taken_from() {
    let mut s = sys(PIDFD_GETFD, [5, 3, 0, 0, 0, 0], Some("/home/u/.aws/credentials"), 4);
    s.target_pid = Some(77);
    let SysObservation::Risky(r) = super::sys(&s, |_| None) else {
        panic!()
    };
    assert_eq!(
        r.act,
        RiskyActivity {
            op: RiskyOp::FdSteal,
            target_pid: Some(77)
        }
    );
    assert_eq!((r.op_name(), r.risk()), ("pidfd_getfd", "descriptor_theft"));
}

#[test]
fn a_compat_call_is_risky_whatever_its_number_means_on_x86_64() {
    // ia32 5 (open) must not be read as x86_64 fstat, nor ia32 102
    // (socketcall) as getuid.
    for nr in [5, 102, OPENAT] {
        let mut s = sys(nr, [0; 6], Some("/etc/shadow"), 0);
        s.compat = true;
        s.syscall = None;
        let SysObservation::Risky(r) = super::sys(&s, |_| None) else {
            panic!("ia32 {nr}")
        };
        assert_eq!(r.act.op, RiskyOp::CompatSyscall(nr));
        assert_eq!(r.risk(), "compat_syscall");
        assert!(r.note().unwrap().contains("int 0x80"));
    }
}

#[test]
fn sendmmsg_is_a_send_and_open_by_handle_at_an_open() {
    let s = sys(SENDMMSG, [3, 0, 2, 0, 0, 0], None, 2);
    assert!(matches!(super::sys(&s, |_| None), SysObservation::Net(n) if n.op == NetOp::SendTo));
    let mut s = sys(OPEN_BY_HANDLE_AT, [4, 0, 0, 0, 0, 0], Some("/home/u/.netrc"), 5);
    s.resolved = true;
    let SysObservation::File(f) = super::sys(&s, |_| None) else {
        panic!()
    };
    assert_eq!((f.op, f.path.as_deref()), (FileOp::Open, Some("/home/u/.netrc")));
    assert!(f.access.read && !f.access.write);
}

#[test]
fn an_io_uring_openat_is_judged_as_an_open_and_a_connect_as_a_connect_via_the_ring() {
    use agent_common::io_uring::{ARG_OPCODE, ARG_OPEN_FLAGS, IO_URING_OP_NR, OP_CONNECT, OP_OPENAT};
    let mut open = sys(IO_URING_OP_NR, [0; 6], Some(".ssh/id_rsa"), 0);
    open.header.kind = EventKind::Risky;
    open.args[ARG_OPCODE] = OP_OPENAT as u64;
    open.args[ARG_OPEN_FLAGS] = agent_common::abi::O_WRONLY;
    let acts = activities(super::sys(&open, |_| None), &open);
    let file = acts.iter().find_map(|a| match a {
        Activity::File(f) => Some(f),
        _ => None,
    });
    let file = file.expect("a file activity");
    assert_eq!(
        (file.path.as_str(), file.access.write, file.via),
        ("/work/.ssh/id_rsa", true, Some("io_uring"))
    );
    assert!(
        matches!(acts[0], Activity::Risky(_)),
        "the ring operation itself comes first"
    );

    let mut connect = sys(IO_URING_OP_NR, [0; 6], None, 0);
    connect.header.kind = EventKind::Risky;
    connect.args[ARG_OPCODE] = OP_CONNECT as u64;
    connect.addr = Some(Addr::Ip {
        ip: "127.0.0.1".parse().unwrap(),
        port: 4444,
        mapped: false,
    });
    connect.sock_type = 1;
    let acts = activities(super::sys(&connect, |_| Some("evil.test".into())), &connect);
    let net = acts.iter().find_map(|a| match a {
        Activity::Net(n) => Some(n),
        _ => None,
    });
    let net = net.expect("a net activity");
    assert_eq!(
        (net.op, net.port, net.hostname.as_deref(), net.via),
        (NetOp::Connect, 4444, Some("evil.test"), Some("io_uring"))
    );
    // Without an address (a send on a connected socket) nothing more is judged.
    connect.addr = None;
    let acts = activities(super::sys(&connect, |_| None), &connect);
    assert_eq!(acts.len(), 1);
}

/// What the policy gets of `o`.
fn activities(o: SysObservation, s: &Sys) -> Vec<Activity> {
    let mut out = Vec::new();
    o.into_activities(s, &mut out);
    out
}
