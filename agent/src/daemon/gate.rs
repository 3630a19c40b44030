//! `mcpwatch exec` as a gate: the server runs as the wrapper's child on
//! new pipes, and the wrapper relays the host's stdio to it line by line,
//! applying `mcp::gate::decide`. The child's stderr is the host's; its exit
//! status (or the signal that killed it) becomes the wrapper's; SIGINT,
//! SIGTERM and SIGHUP sent to the wrapper are forwarded to it.
//!
//! Decisions are reported to the agent on the control socket from a thread
//! of their own (never on the relay's path); with no agent, the gate still
//! decides and each decision is written to standard error.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::{
        fd::FromRawFd as _,
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use nix::sys::signal::{SigSet, Signal};

use super::control::{self, Request};
use crate::{
    enforce::{apply, sandbox::Sandbox},
    mcp::gate::{
        GateEvent, GateSpec,
        decide::{Gate, HOLD_MAX, Verdict},
        frame::{Framer, Sink},
        probe::Step,
    },
};

/// How long the gate waits for the agent when it asks for newer approvals.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(1);
/// How long an exiting gate waits for its decisions to be reported.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Decisions waiting to be reported at most: beyond, the relay waits for
/// the reporter (an audit is not dropped; batching keeps it rare).
const REPORT_QUEUE: usize = 4096;
/// Bytes read from either side at once.
const READ_CHUNK: usize = 64 << 10;
/// How long a held call waits for the gate's own listing of the server's tools.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the held call looks at that listing (it happens once a
/// session at most, so a short sleep is simpler than a condition variable
/// shared with the mutex every message takes).
const PROBE_POLL: Duration = Duration::from_micros(200);
/// Signals forwarded to the server.
const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

pub struct Launch<'a> {
    pub server: &'a str,
    pub socket: &'a Path,
    /// The program as resolved, the name the host gave it, its arguments.
    pub path: &'a str,
    pub arg0: &'a str,
    pub args: &'a [String],
    pub sandbox: Option<Sandbox>,
}

/// Runs the server behind the gate; returns the wrapper's exit status (or
/// re-raises the signal that killed the server).
pub fn run(l: Launch<'_>, spec: GateSpec) -> i32 {
    small_heap();
    let forwarded: SigSet = FORWARDED.iter().copied().collect();
    // Blocked here (and unblocked in the child) so that only the signal
    // thread receives them.
    if let Err(e) = forwarded.thread_block() {
        eprintln!("mcpwatch exec: cannot block signals for the gate: {e}");
    }
    let mut child = match spawn(&l, forwarded) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mcpwatch exec: cannot start {:?} behind the gate: {e}", l.arg0);
            return super::wrapper::EXIT_EXEC_FAILED;
        }
    };
    let child_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    std::thread::spawn(move || {
        while let Ok(sig) = forwarded.wait() {
            let _ = nix::sys::signal::kill(child_pid, sig);
        }
    });

    let reports = reporter(l.socket.to_owned());
    let socket = l.socket.to_owned();
    let refresh = Box::new(move || {
        control::call(&socket, &Request::GateApprovals, REFRESH_TIMEOUT)
            .ok()
            .and_then(|r| r.gate)
    });
    let gate = Arc::new(Mutex::new(Gate::new(l.server, spec, refresh)));
    // SAFETY: fd 1 is this process's stdout, open for its whole life; the
    // gate is its only writer from here on (the wrapper writes nothing else there).
    let out = Arc::new(Mutex::new(Out {
        file: unsafe { File::from_raw_fd(1) },
        mid_line: false,
        queued: Vec::new(),
        broken: false,
    }));
    let to_server = child.stdin.take().expect("piped");
    let from_server = child.stdout.take().expect("piped");

    {
        let (gate, out, reports) = (gate.clone(), out.clone(), reports.clone());
        std::thread::spawn(move || host_to_server(gate, out, reports, to_server));
    }
    server_to_host(&gate, &out, &reports, from_server);
    exit_like(&mut child, &reports)
}

/// A gate runs beside every gated server, so its memory counts many times:
/// glibc would give each relay thread an arena of its own, and after one
/// large message it raises its mmap threshold so that later large buffers
/// stay in the heap once freed. One arena, and buffers above 256 KiB always
/// mapped (and unmapped when freed), keep a gate at its working size.
fn small_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt sets allocator parameters only; called before the
    // gate starts any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

fn spawn(l: &Launch<'_>, forwarded: SigSet) -> std::io::Result<Child> {
    let sandbox = l.sandbox.clone();
    let mut cmd = Command::new(l.path);
    cmd.arg0(l.arg0)
        .args(l.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    // SAFETY: runs in the forked child before exec, while the wrapper is
    // still single-threaded (no thread is started before the spawn), so the
    // allocations of the sandbox's setup cannot meet a lock held elsewhere.
    unsafe {
        cmd.pre_exec(move || {
            forwarded.thread_unblock().map_err(std::io::Error::from)?;
            // Dies with the gate, as the server dies with the wrapper it replaces.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if let Some(sb) = &sandbox {
                let applied = apply::apply(sb).map_err(std::io::Error::other)?;
                for what in &applied.not_enforced {
                    eprintln!("mcpwatch exec: not enforced by this kernel: {what}");
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Waits for the server and its decisions' reports, and ends like the
/// server: its exit code, or its signal.
fn exit_like(child: &mut Child, reports: &Reports) -> i32 {
    let status = child.wait();
    reports.drain();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcpwatch exec: waiting for the server: {e}");
            return super::wrapper::EXIT_EXEC_FAILED;
        }
    };
    if let Some(code) = status.code() {
        return code;
    }
    if let Some(sig) = status.signal().and_then(|s| Signal::try_from(s).ok()) {
        let _ = std::io::stdout().flush();
        let one: SigSet = [sig].into_iter().collect();
        // SAFETY: restoring the default disposition of a signal this
        // process is about to die of; no handler is replaced mid-use.
        unsafe {
            let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl);
        }
        let _ = one.thread_unblock();
        let _ = nix::sys::signal::raise(sig);
    }
    128 + status.signal().unwrap_or(0)
}

/// Sends decisions to the agent, as many as wait in one request; when it
/// cannot, writes them to stderr.
fn reporter(socket: PathBuf) -> Reports {
    let (tx, rx) = mpsc::sync_channel::<Box<GateEvent>>(REPORT_QUEUE);
    let pending = Arc::new(AtomicUsize::new(0));
    let left = pending.clone();
    std::thread::spawn(move || {
        let mut next = None;
        while let Some(first) = next.take().or_else(|| rx.recv().ok()) {
            let first = fit(*first);
            let mut size = serde_json::to_vec(&first).map_or(0, |v| v.len());
            let mut batch = vec![first];
            while let Ok(e) = rx.try_recv() {
                let e = fit(*e);
                size += serde_json::to_vec(&e).map_or(0, |v| v.len());
                if size > control::MAX_REQUEST / 2 {
                    next = Some(Box::new(e));
                    break;
                }
                batch.push(e);
            }
            let n = batch.len();
            let req = Request::GateReports { events: batch };
            if let Err(e) = control::call(&socket, &req, REFRESH_TIMEOUT) {
                let Request::GateReports { events } = req else {
                    unreachable!()
                };
                // One write for the batch (stderr is unbuffered: a line per
                // write would cost a system call per fragment of it).
                let mut text = String::new();
                for event in events {
                    let json = serde_json::to_string(&event).unwrap_or_default();
                    text.push_str(&format!(
                        "mcpwatch exec: gate decision not reported to the agent ({e}): {json}\n"
                    ));
                }
                let _ = std::io::stderr().write_all(text.as_bytes());
            }
            left.fetch_sub(n, Ordering::SeqCst);
        }
    });
    Reports { tx, pending }
}

/// The reporter's queue, and how many decisions it has not reported yet.
/// Boxed: the queue's 4,096 slots are allocated (and touched) up front, a
/// pointer each rather than an event each (0.5 MiB less per gate).
#[derive(Clone)]
struct Reports {
    tx: mpsc::SyncSender<Box<GateEvent>>,
    pending: Arc<AtomicUsize>,
}

impl Reports {
    fn send(&self, e: GateEvent) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(Box::new(e)).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits (a bounded while) for the decisions queued to be reported: the
    /// wrapper is about to exit, and its audit must not end before the server's.
    fn drain(&self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.pending.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let left = self.pending.load(Ordering::SeqCst);
        if left > 0 {
            eprintln!("mcpwatch exec: {left} gate decision(s) not reported before exit");
        }
    }
}

/// A report small enough for the control socket: withheld definitions too
/// large are cut to their name and description.
fn fit(event: GateEvent) -> GateEvent {
    let size = serde_json::to_vec(&event).map_or(0, |v| v.len());
    match event {
        GateEvent::Withheld { mut tools } if size >= control::MAX_REQUEST - 256 => {
            let each = control::MAX_REQUEST / 2 / tools.len().max(1);
            for t in &mut tools {
                let d = t.definition.get("description").and_then(|d| d.as_str()).unwrap_or("");
                let d = crate::mcp::pins::cap(d, each);
                t.definition =
                    serde_json::json!({"name": t.name, "description": d, "inputSchema": "(cut: too large to report)"});
            }
            GateEvent::Withheld { tools }
        }
        e => e,
    }
}

/// The host's side of stdout, shared by both directions.
struct Out {
    file: File,
    /// A long server line is being streamed: answers wait for its end.
    mid_line: bool,
    queued: Vec<Vec<u8>>,
    broken: bool,
}

impl Out {
    fn write(&mut self, bytes: &[u8]) {
        if !self.broken && self.file.write_all(bytes).is_err() {
            self.broken = true;
        }
    }

    fn answer(&mut self, bytes: Vec<u8>) {
        if self.mid_line {
            self.queued.push(bytes);
        } else {
            self.write(&bytes);
        }
    }

    fn end_line(&mut self) {
        self.mid_line = false;
        for q in std::mem::take(&mut self.queued) {
            self.write(&q);
        }
    }
}

struct HostSink<'a> {
    gate: &'a Mutex<Gate>,
    out: &'a Mutex<Out>,
    server: Option<ChildStdin>,
    discarding: bool,
}

impl HostSink<'_> {
    fn forward(&mut self, bytes: &[u8]) {
        if let Some(s) = &mut self.server
            && s.write_all(bytes).is_err()
        {
            // The server stopped reading: what follows cannot reach it (as without a gate).
            self.server = None;
        }
    }
}

impl HostSink<'_> {
    /// Sends the gate's own listing (every page) and waits for it; then the
    /// held line is judged again. No host input is read meanwhile.
    fn probe(&mut self, request: Vec<u8>, line: &[u8]) -> Verdict {
        self.forward(&request);
        let deadline = Instant::now() + PROBE_TIMEOUT;
        loop {
            let step = lock(self.gate).probe_step();
            match step {
                Step::Done => break,
                Step::Send(next) => self.forward(&next),
                Step::Wait if self.server.is_none() => {
                    lock(self.gate).probe_failed("the server stopped reading");
                }
                Step::Wait if Instant::now() > deadline => {
                    lock(self.gate).probe_failed(&format!(
                        "the server did not list its tools in {} s",
                        PROBE_TIMEOUT.as_secs()
                    ));
                }
                Step::Wait => std::thread::sleep(PROBE_POLL),
            }
        }
        lock(self.gate).from_host_probed(line)
    }
}

impl Sink for HostSink<'_> {
    fn line(&mut self, line: &[u8]) {
        // What the gate adds: from the whole line read to it written on (or answered).
        let start = Instant::now();
        let mut verdict = lock(self.gate).from_host(line);
        if let Verdict::Probe(request) = verdict {
            verdict = self.probe(request, line);
        }
        match verdict {
            // (A second listing is never asked for the same line.)
            Verdict::Forward | Verdict::Probe(_) => self.forward(line),
            Verdict::Rewrite(b) => self.forward(&b),
            Verdict::Answer { forward, answer } => {
                if let Some(f) = forward {
                    self.forward(&f);
                }
                if let Some(a) = answer {
                    lock(self.out).answer(a);
                }
            }
        }
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        lock(self.gate).stamp_latency(ns);
    }

    fn long(&mut self, _head: &[u8]) {
        let a = lock(self.gate).long_from_host();
        lock(self.out).answer(a);
        self.discarding = true;
    }

    fn more(&mut self, _bytes: &[u8], end: bool) {
        if end {
            self.discarding = false;
        }
    }
}

fn host_to_server(gate: Arc<Mutex<Gate>>, out: Arc<Mutex<Out>>, reports: Reports, server: ChildStdin) {
    let mut sink = HostSink {
        gate: &gate,
        out: &out,
        server: Some(server),
        discarding: false,
    };
    let mut framer = Framer::default();
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        framer.push(&buf[..n], HOLD_MAX, &mut sink);
        send_reports(&gate, &reports);
    }
    framer.finish(&mut sink);
    send_reports(&gate, &reports);
    // Dropping the pipe gives the server its end of input, as the host's would.
    drop(sink.server.take());
}

struct ServerSink<'a> {
    gate: &'a Mutex<Gate>,
    out: &'a Mutex<Out>,
    streaming: bool,
}

impl Sink for ServerSink<'_> {
    fn line(&mut self, line: &[u8]) {
        let verdict = lock(self.gate).from_server(line);
        let mut out = lock(self.out);
        match verdict {
            // (Probes are the host side's.)
            Verdict::Forward | Verdict::Probe(_) => out.write(line),
            Verdict::Rewrite(b) => out.write(&b),
            Verdict::Answer { forward, answer } => {
                for b in forward.iter().chain(answer.iter()) {
                    out.write(b);
                }
            }
        }
    }

    fn long(&mut self, head: &[u8]) {
        let replacement = lock(self.gate).long_from_server();
        let mut out = lock(self.out);
        match replacement {
            None => {
                out.mid_line = true;
                out.write(head);
                self.streaming = true;
            }
            Some(r) => {
                out.write(&r);
                self.streaming = false;
            }
        }
    }

    fn more(&mut self, bytes: &[u8], end: bool) {
        let mut out = lock(self.out);
        if self.streaming {
            out.write(bytes);
        }
        if end {
            self.streaming = false;
            out.end_line();
        }
    }
}

fn server_to_host(gate: &Mutex<Gate>, out: &Mutex<Out>, reports: &Reports, mut server: std::process::ChildStdout) {
    let mut sink = ServerSink {
        gate,
        out,
        streaming: false,
    };
    let mut framer = Framer::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let limit = lock(gate).server_limit();
        framer.push(&buf[..n], limit, &mut sink);
        send_stamped_reports(gate, reports);
        if lock(out).broken {
            // The host stopped reading: the server gets EPIPE, as it would without a gate.
            break;
        }
    }
    framer.finish(&mut sink);
    // A call held for the gate's own listing waits no more.
    lock(gate).probe_failed("the server's output ended");
    send_reports(gate, reports);
}

fn send_reports(gate: &Mutex<Gate>, reports: &Reports) {
    let events = lock(gate).take_events();
    send_taken(events, reports);
}

/// From the server side's loop: what the host side is still relaying waits
/// for its latency stamp (the host thread reports it).
fn send_stamped_reports(gate: &Mutex<Gate>, reports: &Reports) {
    let events = lock(gate).take_stamped_events();
    send_taken(events, reports);
}

/// The events are taken (the gate's lock released) before sending: a full
/// queue must not hold the gate from the other direction.
fn send_taken(events: Vec<GateEvent>, reports: &Reports) {
    for e in events {
        reports.send(e);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
