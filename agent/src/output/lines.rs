//! Event lines: the names and timestamps every line carries, and the line of
//! each kind of event, rendered from the pipeline's typed observations.

use agent_common::{EventKind, io_uring};

use crate::{
    kernel::decode::{Addr, Exec, FdKind, Header, Sys},
    mcp::CallTag,
    output::{
        events::{Ancestor, Clock, Record},
        stamp::Stamp,
    },
    pipeline::{
        observe::{ExecObservation, NetObservation, RiskyObservation, SysObservation, errno_name},
        procs::Proc,
        servers::Servers,
    },
    policy::activity::{FileOp, NetOp, RiskyOp},
};

/// Turns ids and kernel times into the names and timestamps lines carry.
pub struct Names {
    pub servers: Servers,
    pub clock: Clock,
    /// Timestamp text up to the second, reused within it.
    pub ts_cache: std::cell::RefCell<(u64, String)>,
}

impl Names {
    pub fn server_name(&self, id: u32) -> Option<&str> {
        self.servers.name(id)
    }

    pub fn ts(&self, ktime_ns: u64) -> Stamp {
        self.clock.rfc3339_cached(ktime_ns, &mut self.ts_cache.borrow_mut())
    }

    /// The fields every line has, from what the table knows of the process.
    pub fn proc_record<'a>(&'a self, kind: &'static str, server: u32, ktime_ns: u64, p: &'a Proc) -> Record<'a> {
        Record {
            ts: self.ts(ktime_ns),
            kind,
            server: self.server_name(server),
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            exe: p.exe_json(),
            argv: p.argv_json(),
            proc_fields: p.line_fields(p.pid, p.ppid, p.uid, None),
            ..Default::default()
        }
    }

    /// A kernel event's line: the header's fields win over the table's.
    pub fn base_record<'a>(&'a self, h: &'a Header, kind: &'static str, p: Option<&'a Proc>) -> Record<'a> {
        Record {
            ts: self.ts(h.ktime_ns),
            kind,
            server: self.server_name(h.server),
            pid: h.pid,
            ppid: h.ppid,
            uid: h.uid,
            exe: p.map(Proc::exe_json).unwrap_or_default(),
            argv: p.map(Proc::argv_json).unwrap_or_default(),
            proc_fields: p.and_then(|p| {
                let ids = (h.tid == h.pid).then_some((h.gid, h.comm.as_str()));
                p.line_fields(h.pid, h.ppid, h.uid, ids)
            }),
            tid: (h.tid != h.pid).then_some(h.tid),
            gid: Some(h.gid),
            comm: Some(&h.comm),
            ..Default::default()
        }
    }
}
/// Marks a kernel event's line with the tool call it happened during.
pub fn tag_record<'a>(r: &mut Record<'a>, tag: Option<&'a CallTag>) {
    if let Some(t) = tag {
        r.tool = Some(&t.tool);
        r.call_id = Some(&t.call_id);
        r.calls_in_flight = (t.in_flight > 1).then_some(t.in_flight);
    }
}

impl Names {
    /// An exec's line.
    pub fn exec_record<'a>(
        &'a self,
        e: &'a Exec,
        o: &'a ExecObservation,
        p: Option<&'a Proc>,
        ancestry: &'a [(u32, String)],
    ) -> Record<'a> {
        let mut r = self.base_record(&e.header, EventKind::Exec.name(), p);
        r.filename = Some(&e.filename);
        r.interp = e.interp.as_deref();
        r.argv_truncated = Some(e.argv_truncated);
        r.cwd = e.cwd.as_deref();
        r.stdio = Some(e.stdio.map(FdKind::name));
        r.fileless = Some(o.act.fileless);
        r.written_then_exec = Some(o.act.written_by_server);
        r.ancestry = Some(ancestry.iter().map(|(pid, exe)| Ancestor { pid: *pid, exe }).collect());
        r
    }

    /// A file, net or risky syscall's line, and the second line some carry
    /// (an access to another process's `/proc` files: risky; a listen the
    /// network can reach: exposed), each handed to `emit` where it was built:
    /// a record is ~900 bytes, and returning one copied it twice per event.
    /// The second is rare and boxed.
    pub fn sys_records<'a>(
        &'a self,
        s: &'a Sys,
        o: &'a SysObservation,
        p: Option<&'a Proc>,
        mut emit: impl FnMut(&mut Record<'a>),
    ) {
        let h = &s.header;
        let mut r = self.base_record(h, h.kind.name(), p);
        r.syscall = Some(s.name);
        r.result = Some(s.ret);
        r.error = errno_name(s.ret);
        r.from_user_memory = s.from_user_memory;
        let mut extra = None;
        match o {
            SysObservation::File(f) => {
                r.op = Some(f.op_name());
                r.path_resolved = Some(s.resolved);
                r.path_truncated = Some(s.path_truncated);
                if f.op == FileOp::Open {
                    r.path_as_given = if s.resolved {
                        s.path2.as_deref()
                    } else {
                        s.path.as_deref()
                    };
                } else {
                    r.path_as_given = s.path.as_deref();
                    r.path2 = s.path2.as_deref();
                }
                r.path = f.path.as_deref();
                r.access = Some(f.access);
                if let Some(risky) = &f.other_proc {
                    let risky = RiskyObservation {
                        act: risky.clone(),
                        net: None,
                        file: None,
                    };
                    let mut x = self.base_record(h, EventKind::Risky.name(), p);
                    x.op = Some("proc_access");
                    x.risk = Some(risky.risk());
                    x.target_pid = risky.act.target_pid;
                    x.path = f.path.as_deref();
                    x.result = Some(s.ret);
                    x.error = r.error;
                    extra = Some(Box::new(x));
                }
            }
            SysObservation::Net(n) => {
                r.op = Some(n.op.name());
                r.local_port = s.local_port;
                destination(&mut r, n);
                if n.op == NetOp::Listen && s.ret == 0 && n.addr.is_some() {
                    r.exposed = Some(n.exposed);
                    if n.exposed {
                        let mut x = self.base_record(h, "exposed", p);
                        x.op = Some("listen");
                        x.family = r.family;
                        x.proto = r.proto;
                        x.addr = r.addr.clone();
                        x.port = r.port;
                        extra = Some(Box::new(x));
                    }
                }
            }
            SysObservation::Risky(k) => {
                if let RiskyOp::IoUringOp(opcode) = k.act.op {
                    // Submitted, not completed: no syscall and no result.
                    r.syscall = None;
                    r.result = None;
                    r.error = None;
                    r.detail = Some(io_uring_fields(opcode, &s.args));
                }
                r.op = Some(k.op_name());
                r.risk = Some(k.risk());
                r.target_pid = k.act.target_pid;
                r.note = k.note();
                r.path = s.path.as_deref();
                r.path2 = s.path2.as_deref();
                if let Some(f) = &k.file {
                    // An io_uring open: the path made absolute, as given, and
                    // the access its flags ask for.
                    r.path = f.path.as_deref();
                    r.path_as_given = s.path.as_deref();
                    r.path_truncated = Some(s.path_truncated);
                    r.access = Some(f.access);
                }
                if let Some(n) = &k.net {
                    destination(&mut r, n);
                }
            }
            SysObservation::Other => {}
        }
        emit(&mut r);
        if let Some(mut x) = extra {
            emit(&mut x);
        }
    }
}

/// A socket call's protocol, family and address (with the name a DNS answer
/// gave it).
fn destination<'a>(r: &mut Record<'a>, n: &'a NetObservation) {
    r.proto = n.proto;
    r.family = n.family;
    match &n.addr {
        Some(Addr::Ip { ip, port, .. }) => {
            r.addr = Some(ip.to_string());
            r.port = Some(*port);
            r.hostname = n.hostname.clone();
        }
        Some(Addr::Unix { path, .. }) => r.unix_path = Some(path),
        None => {}
    }
}

/// An io_uring operation's fields: the opcode by name (its number when
/// unnamed), the descriptor it acts on (none for an openat and the other
/// path operations) and the submitter's tag.
fn io_uring_fields(opcode: u8, args: &[u64; 6]) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    let name = io_uring::opcode_name(opcode).map_or_else(|| opcode.to_string(), str::to_owned);
    m.insert("opcode".into(), name.into());
    if io_uring::acts_on_fd(opcode) {
        m.insert("fd".into(), (args[io_uring::ARG_FD] as i64 as i32).into());
    }
    m.insert("user_data".into(), args[io_uring::ARG_USER_DATA].into());
    m
}
