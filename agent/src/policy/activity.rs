//! The policy engine's input: what a watched process did, with who did it.
//! Mirrors the kernel's facts (decode.rs) without depending on their layout.

use std::net::IpAddr;

/// Who acted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcContext {
    pub server: String,
    pub ktime_ns: u64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    /// Nearest first: (pid, exe).
    pub ancestry: Vec<(u32, String)>,
    /// The parent's command line (tells `npx` from plain `node`).
    pub parent_argv: Vec<String>,
    /// Working directory, when known (resolves relative arguments).
    pub cwd: Option<String>,
    /// MCP tool call in flight, when known.
    pub tool: Option<String>,
    pub call_id: Option<String>,
    /// Tools of every call of the server in flight, when there are several
    /// (`tool` is then only the most recent one's); empty otherwise.
    pub tools_in_flight: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    Exec(ExecActivity),
    File(FileActivity),
    Net(NetActivity),
    Risky(RiskyActivity),
}

/// What one of fds 0/1/2 was at exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StdioKind {
    File(String),
    Pipe,
    /// A TCP or UDP socket.
    Socket,
    /// A unix socket (socketpair): what Node-based hosts use for stdio.
    LocalSocket,
    Tty,
    Other,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecActivity {
    /// The path given to exec.
    pub filename: String,
    /// The interpreter run instead (scripts).
    pub interp: Option<String>,
    pub argv: Vec<String>,
    /// Executed from memory (memfd, deleted file, /proc/self/fd/N).
    pub fileless: bool,
    /// The exec'd file was written by this server shortly before (the
    /// agent's record of the server's writes).
    pub written_by_server: bool,
    /// fds 0, 1, 2 (None: unknown).
    pub stdio: [Option<StdioKind>; 3],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    Open,
    Truncate,
    Rename,
    Unlink,
    Mkdir,
    Link,
    Symlink,
    Chmod,
    Chown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileActivity {
    pub op: FileOp,
    /// Absolute, resolved.
    pub path: String,
    /// rename/link/symlink: the new name.
    pub path2: Option<String>,
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
    pub directory: bool,
    /// fd or -errno.
    pub result: i64,
    pub path_truncated: bool,
}

impl FileActivity {
    /// Whether the operation changes the file system (else it only reads).
    pub fn writes(&self) -> bool {
        match self.op {
            FileOp::Open => self.write || self.create || self.truncate || self.append,
            _ => true,
        }
    }

    pub fn succeeded(&self) -> bool {
        self.result >= 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetOp {
    Connect,
    Bind,
    Listen,
    Accept,
    SendTo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetActivity {
    pub op: NetOp,
    pub proto: Proto,
    /// Peer (connect, sendto, accept) or local address (bind, listen); None for unix sockets.
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub unix_path: Option<String>,
    /// Learnt from DNS answers for this address.
    pub hostname: Option<String>,
    /// A listen on a non-loopback address.
    pub exposed: bool,
    pub result: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RiskyOp {
    Ptrace,
    ProcessVmReadv,
    ProcessVmWritev,
    ProcMem,
    ProcEnviron,
    ProcMaps,
    SetUid,
    SetGid,
    Capset,
    InitModule,
    Bpf,
    Mount,
    IoUringSetup,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskyActivity {
    pub op: RiskyOp,
    pub target_pid: Option<u32>,
}

impl RiskyOp {
    pub fn name(self) -> &'static str {
        match self {
            RiskyOp::Ptrace => "ptrace",
            RiskyOp::ProcessVmReadv => "process_vm_readv",
            RiskyOp::ProcessVmWritev => "process_vm_writev",
            RiskyOp::ProcMem => "proc_mem",
            RiskyOp::ProcEnviron => "proc_environ",
            RiskyOp::ProcMaps => "proc_maps",
            RiskyOp::SetUid => "setuid",
            RiskyOp::SetGid => "setgid",
            RiskyOp::Capset => "capset",
            RiskyOp::InitModule => "init_module",
            RiskyOp::Bpf => "bpf",
            RiskyOp::Mount => "mount",
            RiskyOp::IoUringSetup => "io_uring_setup",
        }
    }
}

impl FileOp {
    pub fn name(self) -> &'static str {
        match self {
            FileOp::Open => "open",
            FileOp::Truncate => "truncate",
            FileOp::Rename => "rename",
            FileOp::Unlink => "unlink",
            FileOp::Mkdir => "mkdir",
            FileOp::Link => "link",
            FileOp::Symlink => "symlink",
            FileOp::Chmod => "chmod",
            FileOp::Chown => "chown",
        }
    }
}

impl NetOp {
    pub fn name(self) -> &'static str {
        match self {
            NetOp::Connect => "connect",
            NetOp::Bind => "bind",
            NetOp::Listen => "listen",
            NetOp::Accept => "accept",
            NetOp::SendTo => "sendto",
        }
    }
}
