//! The control socket: how `mcpwatch exec` asks the agent to watch it.
//!
//! One JSON object per line each way. The agent takes the caller's pid from
//! SO_PEERCRED, never from the request, so a caller can put only itself under
//! watch. There is deliberately no "unwatch": a watched process must not be
//! able to leave.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    enforce::sandbox::Sandbox,
    mcp::gate::{GateEvent, GateSpec},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/mcpwatch/control.sock";
/// Environment variable that overrides the socket path for the wrapper.
pub const SOCKET_ENV: &str = "MCPWATCH_SOCKET";
/// Longest request line accepted (a gate's report carries a withheld tool's
/// definition; the gate cuts one that would not fit).
pub const MAX_REQUEST: usize = 64 << 10;
/// A connection that sends no request within this is closed (idle
/// connections must not pile up until the agent runs out of descriptors).
const IDLE: std::time::Duration = std::time::Duration::from_secs(5);
/// Open connections one non-root user may hold at once (root: `ROOT_CONNECTIONS`).
const USER_CONNECTIONS: usize = 32;
const ROOT_CONNECTIONS: usize = 1024;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Watch the calling process under `server`; it is about to run
    /// `command` (program resolved) in `cwd`, from which its sandbox is
    /// compiled when its manifest is in enforce mode.
    Watch {
        server: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        command: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        /// The wrapper gates the server (`mcpwatch exec --gate`): the reply
        /// carries the gate's settings even when the manifest has none.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        gate: bool,
    },
    /// The gate's current settings for the caller's server (approvals made since it started).
    GateApprovals,
    /// A decision of the caller's gate, to alert.
    GateReport { event: GateEvent },
    /// Decisions of the caller's gate, to alert, in the order they were made
    /// (one connection for many: a busy gate's audit keeps up).
    GateReports { events: Vec<GateEvent> },
    /// Is the agent there?
    Ping,
    /// What the agent watches (root only).
    Status,
    /// Send a test alert through every output (root only); with `wait`, the
    /// answer comes once every sink delivered it, failed, or timed out.
    TestAlert {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        wait: bool,
    },
}

/// What became of the test alert at one sink.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct SinkDelivery {
    pub sink: String,
    pub delivered: bool,
    /// Why not (the sink's error, or that it did not settle in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long a `test_alert` waits for the sinks to settle.
pub const TEST_ALERT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The agent's answer to `status`.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// Process ids in the kernel's watched map.
    pub watched: Vec<u32>,
    /// Process ids the kernel holds as pending (exec'd while discovery rules
    /// exist, not matched by userspace yet).
    pub pending: Vec<u32>,
    /// Servers with the processes the agent attributes to them.
    pub servers: Vec<ServerStatus>,
    /// Events decoded since start.
    pub events: u64,
    /// Events lost in the kernel since start.
    pub lost: u64,
    /// Records the probes dropped or could not complete since start (an
    /// unreadable argument, a full map...), by "probe/reason".
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub probe_errors: std::collections::BTreeMap<String, u64>,
    /// Bytes of stdin/stdout captured from watched servers.
    #[serde(default)]
    pub stdio_bytes: u64,
    /// Stale watched-map entries removed by the periodic check (a dead process
    /// the exit hook did not see).
    pub gc_removed: u64,
    /// Syscall records of processes held for the discovery rules that no
    /// rule made a server: dropped, never judged.
    #[serde(default)]
    pub released_records: u64,
    /// Where `/metrics` is served (None: metrics off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct ServerStatus {
    pub name: String,
    pub pids: Vec<u32>,
}

#[derive(Serialize, Deserialize, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    /// `test_alert` with `wait`: what became of it at each sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinks: Option<Vec<SinkDelivery>>,
    /// The sandbox to apply before exec (a server in enforce mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// The gate to relay the server through (a manifest `gate` section, or asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSpec>,
}

/// A registration accepted: the server the process is watched under, and
/// its sandbox when enforced.
#[derive(Debug)]
pub struct Registered {
    pub server: String,
    pub sandbox: Option<Sandbox>,
    pub gate: Option<GateSpec>,
}

impl Reply {
    pub fn error(e: impl ToString) -> Self {
        Self {
            ok: false,
            error: Some(e.to_string()),
            ..Default::default()
        }
    }
}

/// A message for the event loop, which owns the maps.
#[derive(Debug)]
pub enum ControlMsg {
    Watch(WatchRequest),
    Status(oneshot::Sender<Status>),
    /// Emit a test alert on behalf of `pid`; the reply is the alert id and,
    /// per sink, where it will say what became of it.
    TestAlert {
        pid: u32,
        reply: oneshot::Sender<TestAlertSent>,
    },
    /// From the gate of the server `pid` is watched under.
    Gate(GateRequest),
}

/// A test alert handed to the outputs.
#[derive(Debug)]
pub struct TestAlertSent {
    pub id: String,
    pub sinks: Vec<(String, oneshot::Receiver<crate::output::sinks::Outcome>)>,
}

/// Waits (at most [`TEST_ALERT_WAIT`] in all) for each sink's outcome.
async fn settled(sinks: Vec<(String, oneshot::Receiver<crate::output::sinks::Outcome>)>) -> Vec<SinkDelivery> {
    let deadline = tokio::time::Instant::now() + TEST_ALERT_WAIT;
    let mut out = Vec::with_capacity(sinks.len());
    for (sink, rx) in sinks {
        let outcome = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => Err("the sink stopped".into()),
            Err(_) => Err(format!(
                "not settled within {TEST_ALERT_WAIT:?} (waiting behind older alerts, or the receiver is slow)"
            )),
        };
        out.push(SinkDelivery {
            sink,
            delivered: outcome.is_ok(),
            error: outcome.err(),
        });
    }
    out
}

/// What a gate asks: its settings (`report: None`) or to alert a decision.
#[derive(Debug)]
pub struct GateRequest {
    pub pid: u32,
    pub report: Option<GateEvent>,
    pub reply: oneshot::Sender<Result<GateSpec, String>>,
}

/// A registration: watch `pid` under `server`. The reply names the server the
/// process ends up watched under (an already watched process keeps its own).
#[derive(Debug)]
pub struct WatchRequest {
    pub pid: u32,
    pub uid: u32,
    pub server: String,
    pub command: Vec<String>,
    pub cwd: Option<String>,
    pub gate: bool,
    pub reply: oneshot::Sender<Result<Registered, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another agent is already listening on {0}")]
    InUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The bound socket; the file is removed on drop.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds `path` (mode 0666: any user may register its own processes),
    /// replacing a stale socket left by a crashed agent.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections until the task is dropped: at most
    /// `USER_CONNECTIONS` open per non-root user, each closed when idle.
    pub async fn serve(self, tx: mpsc::Sender<ControlMsg>) {
        let open = Connections::default();
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
                    let Some(slot) = open.take(uid) else {
                        log::debug!("control socket: uid {uid} holds too many connections; refused one");
                        continue;
                    };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        handle(stream, tx).await;
                    });
                }
                Err(e) => {
                    log::warn!("control socket accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Open control connections per uid.
#[derive(Clone, Default)]
struct Connections(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>);

/// One open connection of a uid, given back when dropped.
struct Slot {
    open: Connections,
    uid: u32,
}

impl Connections {
    fn take(&self, uid: u32) -> Option<Slot> {
        let cap = if uid == 0 { ROOT_CONNECTIONS } else { USER_CONNECTIONS };
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(uid).or_default();
        (*n < cap).then(|| {
            *n += 1;
            Slot {
                open: self.clone(),
                uid,
            }
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.open.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

/// Sends the event loop a message carrying a reply channel and waits for the
/// answer; the error is the reply to give when the agent is going away.
async fn ask<T>(tx: &mpsc::Sender<ControlMsg>, msg: impl FnOnce(oneshot::Sender<T>) -> ControlMsg) -> Result<T, Reply> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(msg(rtx))
        .await
        .map_err(|_| Reply::error("agent is shutting down"))?;
    rrx.await.map_err(|_| Reply::error("agent is shutting down"))
}

async fn handle(stream: UnixStream, tx: mpsc::Sender<ControlMsg>) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("control socket: no peer credentials: {e}");
            return;
        }
    };
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r.take(MAX_REQUEST as u64));
    let Ok(read) = tokio::time::timeout(IDLE, reader.read_line(&mut line)).await else {
        log::debug!("control socket: uid {} sent no request in {IDLE:?}; closed", cred.uid());
        return;
    };
    let reply = match read {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(Request::Ping) => Reply {
                ok: true,
                pid: cred.pid().map(|p| p as u32),
                ..Default::default()
            },
            Ok(Request::Status | Request::TestAlert { .. }) if cred.uid() != 0 => {
                Reply::error("this request is for root only")
            }
            Ok(Request::TestAlert { wait }) => {
                let pid = cred.pid().unwrap_or(0) as u32;
                match ask(&tx, |reply| ControlMsg::TestAlert { pid, reply }).await {
                    Ok(sent) => Reply {
                        ok: true,
                        alert_id: Some(sent.id),
                        sinks: match wait {
                            true => Some(settled(sent.sinks).await),
                            false => None,
                        },
                        ..Default::default()
                    },
                    Err(r) => r,
                }
            }
            Ok(Request::Status) => match ask(&tx, ControlMsg::Status).await {
                Ok(st) => Reply {
                    ok: true,
                    status: Some(st),
                    ..Default::default()
                },
                Err(r) => r,
            },
            Ok(Request::GateApprovals) => gate(&tx, cred.pid(), None).await,
            Ok(Request::GateReport { event }) => gate(&tx, cred.pid(), Some(event)).await,
            Ok(Request::GateReports { events }) => {
                let mut reply = Reply::error("no decisions");
                for event in events {
                    reply = gate(&tx, cred.pid(), Some(event)).await;
                    if !reply.ok {
                        break;
                    }
                }
                reply
            }
            Ok(Request::Watch {
                server,
                command,
                cwd,
                gate,
            }) => match cred.pid() {
                Some(pid) if pid > 0 => {
                    let uid = cred.uid();
                    let pid = pid as u32;
                    match ask(&tx, |reply| {
                        ControlMsg::Watch(WatchRequest {
                            pid,
                            uid,
                            server,
                            command,
                            cwd,
                            gate,
                            reply,
                        })
                    })
                    .await
                    {
                        Ok(Ok(r)) => Reply {
                            ok: true,
                            server: Some(r.server),
                            pid: Some(pid),
                            sandbox: r.sandbox,
                            gate: r.gate,
                            ..Default::default()
                        },
                        Ok(Err(e)) => Reply::error(e),
                        Err(r) => r,
                    }
                }
                _ => Reply::error("peer pid unknown (caller in another pid namespace?)"),
            },
            Err(e) => Reply::error(format!("bad request: {e}")),
        },
        Err(e) => Reply::error(format!("reading request: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let _ = w.write_all(&out).await;
}

/// A gate's request: answered for the server its pid is watched under only
/// (a process cannot read or alert for another server's gate).
async fn gate(tx: &mpsc::Sender<ControlMsg>, pid: Option<i32>, report: Option<GateEvent>) -> Reply {
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return Reply::error("peer pid unknown (caller in another pid namespace?)");
    };
    let pid = pid as u32;
    match ask(tx, |reply| ControlMsg::Gate(GateRequest { pid, report, reply })).await {
        Ok(Ok(spec)) => Reply {
            ok: true,
            gate: Some(spec),
            ..Default::default()
        },
        Ok(Err(e)) => Reply::error(e),
        Err(r) => r,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no mcpwatch agent is listening on {path} ({source})")]
    NoAgent {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the agent on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent refused: {0}")]
    Refused(String),
    #[error("the agent sent an unreadable reply: {0:?}")]
    BadReply(String),
}

/// Sends one request and waits for its reply (blocking; used by the CLI and
/// the wrapper, which have no runtime).
pub fn call(socket: &Path, req: &Request, timeout: std::time::Duration) -> Result<Reply, ClientError> {
    use std::io::{BufRead as _, Write as _};
    let path = socket.display().to_string();
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|source| ClientError::NoAgent {
        path: path.clone(),
        source,
    })?;
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(req).expect("requests serialize");
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    std::io::BufReader::new(&s).read_line(&mut answer).map_err(io)?;
    let reply: Reply = serde_json::from_str(answer.trim_end()).map_err(|_| ClientError::BadReply(answer.clone()))?;
    if !reply.ok {
        return Err(ClientError::Refused(reply.error.unwrap_or_default()));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Watch {
                server: "fs".into(),
                command: vec![],
                cwd: None,
                gate: false,
            })
            .unwrap(),
            r#"{"op":"watch","server":"fs"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"ping"}"#).unwrap(),
            Request::Ping
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"unwatch"}"#).is_err());
    }

    #[tokio::test]
    async fn peer_pid_comes_from_the_kernel() {
        let dir = std::env::temp_dir().join(format!("mcpwatch-ctl-{}", std::process::id()));
        let path = dir.join("c.sock");
        let sock = ControlSocket::bind(&path).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let server = tokio::spawn(sock.serve(tx));
        let answer = tokio::spawn(async move {
            let Some(ControlMsg::Watch(req)) = rx.recv().await else {
                panic!("no watch request")
            };
            assert_eq!(req.pid, std::process::id());
            req.reply
                .send(Ok(Registered {
                    server: req.server.clone(),
                    sandbox: None,
                    gate: None,
                }))
                .unwrap();
        });
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{\"op\":\"watch\",\"server\":\"fs\"}\n").await.unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert!(reply.ok, "{reply:?}");
        assert_eq!(reply.pid, Some(std::process::id()));
        answer.await.unwrap();
        server.abort();
        let _ = std::fs::remove_dir_all(dir);
    }
}
