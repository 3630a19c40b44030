//! JSON lines: one object per event, to stdout or a file.

use std::{
    io::{self, BufWriter, Write},
    path::Path,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use serde_json::value::RawValue;

use super::{
    events_file::EventsFile,
    format::ocsf,
    record_json,
    stamp::Stamp,
    summary::{self, Summaries, Verdict},
};
use crate::{
    config::{EventsConfig, EventsFormat, EventsLevel},
    policy::activity::Access,
};

/// One ancestor of a process: pid and exe.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Ancestor<'a> {
    pub pid: u32,
    pub exe: &'a str,
}

/// A value, or its JSON text rendered once (a process's exe and argv are on
/// every line of that process: escaping them per event was most of the cost
/// of writing events).
#[derive(Debug)]
pub enum Json<'a, T: ?Sized> {
    Value(&'a T),
    Rendered(&'a RawValue),
}

impl<T: ?Sized> Clone for Json<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for Json<'_, T> {}

impl<T: Serialize + ?Sized> Serialize for Json<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Value(v) => v.serialize(s),
            Json::Rendered(r) => r.serialize(s),
        }
    }
}

impl Default for Json<'_, str> {
    fn default() -> Self {
        Json::Value("")
    }
}

impl Default for Json<'_, [String]> {
    fn default() -> Self {
        Json::Value(&[])
    }
}

/// A process's fields of a line as text rendered once per process and
/// copied as one piece: `pid` to `argv`, then `gid` and `comm` when `ids`
/// (the event has no `tid`, and its gid and comm are those rendered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcText<'a> {
    pub text: &'a str,
    pub ids: bool,
}

/// The JSON form of an event. Common fields first; the rest depends on `kind`.
#[derive(Serialize, Debug, Default)]
pub struct Record<'a> {
    pub ts: Stamp,
    /// The program's own names (`&'static`): written without an escape check.
    pub kind: &'static str,
    pub server: Option<&'a str>,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub exe: Json<'a, str>,
    pub argv: Json<'a, [String]>,
    /// The process's fields as its lines all write them, rendered once per
    /// process (`Proc::line_fields`); the fields are the same values, for
    /// every other output.
    #[serde(skip)]
    pub proc_fields: Option<ProcText<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<&'a str>,
    /// exec: path given to exec, and interpreter run instead (scripts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interp: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ancestry: Option<Vec<Ancestor<'a>>>,
    /// fork
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_pid: Option<u32>,
    /// exit
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// watch: why the process is watched (wrapper, rule, scan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// loss: the kind of the lost events and how many were lost since the last report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// loss: the probe that counted a drop (`reason` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<&'a str>,
    /// exec: working directory, what fds 0-2 are, fileless (memfd or deleted
    /// file), and whether the server wrote the file it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdio: Option<[&'a str; 3]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fileless: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_then_exec: Option<bool>,
    /// file, net, risky: the operation and the syscall it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<&'static str>,
    /// fd, byte count, 0, or -errno; `error` names the errno.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// file: absolute path (resolved in the kernel from the opened file when
    /// `path_resolved`), the path as the process gave it, a second path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_as_given: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_resolved: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path2: Option<&'a str>,
    /// An address or path read from the process's memory after the call
    /// (a racing thread could have changed it), not from a kernel object.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_user_memory: bool,
    /// file: what the call asked for, as words (`["read", "write"]`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "access_words")]
    pub access: Option<Access>,
    /// net: family, protocol, address (remote for connect/sendto/accept,
    /// local for bind/listen), port, Unix path, hostname learnt from DNS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix_path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposed: Option<bool>,
    /// dns: query or answer, name, type, addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsRecord>,
    /// risky: category, the process it targets, a note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    /// The MCP tool call in flight when it happened (`mcp::Mcp::current_call`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<&'a str>,
    /// Calls of the server in flight, when more than one (the attribution was a choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_in_flight: Option<usize>,
    /// Fields of MCP lines (`tool_call`, `mcp_garbage`...), flattened into the line.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Map<String, serde_json::Value>>,
}

fn access_words<S: serde::Serializer>(a: &Option<Access>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.collect_seq(a.each_word()),
        None => s.serialize_none(),
    }
}

/// A DNS message in an event line.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub direction: &'static str,
    pub id: u16,
    pub name: String,
    pub qtype: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
}

/// Converts kernel boot-time nanoseconds to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at boot, in ns since the epoch.
    boot_epoch_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(Duration::from)
            .unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            boot_epoch_ns: now.as_nanos() as i128 - boot.as_nanos() as i128,
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        let ns = (self.boot_epoch_ns + ktime_ns as i128).max(0) as u128;
        SystemTime::UNIX_EPOCH + Duration::new((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32)
    }

    /// RFC 3339 UTC with nanoseconds.
    pub fn rfc3339(&self, ktime_ns: u64) -> String {
        humantime::format_rfc3339_nanos(self.wall(ktime_ns)).to_string()
    }

    /// [`Clock::rfc3339`], with the part up to the second kept in `cache`
    /// between calls (events come in bursts within one second).
    pub fn rfc3339_cached(&self, ktime_ns: u64, cache: &mut (u64, String)) -> Stamp {
        let ns = (self.boot_epoch_ns + ktime_ns as i128).max(0) as u128;
        // In 64 bits until 2554 (a 128-bit division is a library call).
        let (secs, nanos) = match u64::try_from(ns) {
            Ok(ns) => (ns / 1_000_000_000, (ns % 1_000_000_000) as u32),
            Err(_) => ((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u32),
        };
        if cache.0 != secs || cache.1.is_empty() {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            cache.1 = humantime::format_rfc3339_seconds(t).to_string();
            cache.1.pop(); // the 'Z'
            cache.0 = secs;
        }
        Stamp::with_nanos(&cache.1, nanos)
    }

    /// Boot-time nanoseconds now (the kernel's event clock).
    pub fn now_ktime() -> u64 {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map(|t| Duration::from(t).as_nanos() as u64)
            .unwrap_or(0)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// Where event lines go.
pub struct EventWriter {
    out: Out,
    format: EventsFormat,
    level: EventsLevel,
    summaries: Summaries,
    /// The line being rendered (reused).
    line: Vec<u8>,
    failed: u64,
}

enum Out {
    Stdout(BufWriter<io::Stdout>),
    File(EventsFile),
}

impl EventWriter {
    pub fn stdout(format: EventsFormat) -> Self {
        Self {
            out: Out::Stdout(BufWriter::with_capacity(64 << 10, io::stdout())),
            format,
            level: EventsLevel::All,
            summaries: Summaries::default(),
            line: Vec::new(),
            failed: 0,
        }
    }

    /// Appends to `path` (see [`EventsFile`]: bounded, whole lines).
    pub fn file(path: &Path, limits: EventsConfig) -> io::Result<Self> {
        Ok(Self {
            out: Out::File(EventsFile::open(path, limits)?),
            format: limits.format,
            level: limits.level,
            summaries: Summaries::default(),
            line: Vec::new(),
            failed: 0,
        })
    }

    /// Which lines are written (alerts always are).
    pub fn with_level(mut self, level: EventsLevel) -> Self {
        self.level = level;
        self
    }

    /// Whether a watched server's activity lines (anything but its start,
    /// exit and loss) are written at all: not at the `alerts` level, where
    /// callers need not build them.
    pub fn writes_activity(&self) -> bool {
        self.level != EventsLevel::Alerts
    }

    /// Writes one line, or what the level makes of it. A failed write (full
    /// disk, closed pipe) is logged and counted; the agent keeps watching.
    pub fn write(&mut self, r: &Record<'_>) {
        match self.level {
            EventsLevel::All => self.write_record(r),
            EventsLevel::Alerts => {
                if summary::alerts_level_line(&mut self.summaries, r) {
                    self.write_record(r)
                }
            }
            EventsLevel::Summary => match self.summaries.on(r) {
                Verdict::Drop => {}
                Verdict::Write => self.write_record(r),
                Verdict::WriteTouched(touched) => match serde_json::to_value(r) {
                    Ok(mut v) => {
                        v["touched"] = touched;
                        self.write_value(&v);
                    }
                    Err(e) => self.failed(1, &e.into()),
                },
                Verdict::WriteThen(lines) => {
                    self.write_record(r);
                    for l in &lines {
                        self.write_value(l);
                    }
                }
            },
        }
    }

    fn write_value(&mut self, v: &serde_json::Value) {
        match self.format {
            EventsFormat::Mcpwatch => self.write_line(v),
            EventsFormat::Ocsf => self.write_line(&ocsf::from_event(v)),
        }
    }

    fn write_record(&mut self, r: &Record<'_>) {
        match self.format {
            EventsFormat::Mcpwatch => self.emit_line(|b| record_json::write(r, b)),
            // The record's JSON value is mapped, not text parsed back.
            EventsFormat::Ocsf => match serde_json::to_value(r) {
                Ok(v) => self.write_line(&ocsf::from_event(&v)),
                Err(e) => self.failed(1, &e.into()),
            },
        }
    }

    fn write_line<T: Serialize>(&mut self, r: &T) {
        self.emit_line(|b| serde_json::to_writer(b, r))
    }

    /// Writes the line `render` makes: into the events file's own buffer
    /// (see [`EventsFile::write_line_with`]), or through `self.line` to
    /// stdout. A line that fails to render or to be written is counted.
    fn emit_line(&mut self, render: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>) {
        let res = match &mut self.out {
            Out::File(f) => f.write_line_with(render),
            Out::Stdout(w) => {
                self.line.clear();
                match render(&mut self.line) {
                    Ok(()) => {
                        self.line.push(b'\n');
                        w.write_all(&self.line)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        };
        if let Err(e) = res {
            self.failed(1, &e);
        }
    }

    fn failed(&mut self, n: u64, e: &io::Error) {
        let before = self.failed;
        self.failed += n;
        // Logged at powers of two: a full disk must not flood the log.
        if (before + 1..=self.failed).any(u64::is_power_of_two) {
            log::error!("writing events failed ({} lines dropped so far): {e}", self.dropped());
        }
    }

    /// Opens the events file again (SIGHUP, after logrotate moved it).
    pub fn reopen(&mut self) {
        if let Out::File(f) = &mut self.out
            && let Err(e) = f.reopen()
        {
            log::error!("reopening the events file failed: {e}");
        }
    }

    /// Writes an alert as a line of its own: `{"kind":"alert", ...alert fields}`.
    pub fn write_alert(&mut self, alert: &crate::alerts::Alert) {
        if self.format == EventsFormat::Ocsf {
            self.write_line(&ocsf::from_alert(alert));
            return;
        }
        #[derive(Serialize)]
        struct Line<'a> {
            kind: &'static str,
            #[serde(flatten)]
            alert: &'a crate::alerts::Alert,
        }
        self.write_line(&Line { kind: "alert", alert });
    }

    pub fn flush(&mut self) {
        let res = match &mut self.out {
            Out::Stdout(w) => w.flush(),
            Out::File(f) => f.flush(),
        };
        if let Err(e) = res {
            log::error!("flushing events failed ({} lines dropped so far): {e}", self.dropped());
        }
    }

    /// Lines that could not be written (`mcpwatch_events_dropped_total`).
    pub fn dropped(&self) -> u64 {
        let file = match &self.out {
            Out::File(f) => f.dropped(),
            Out::Stdout(_) => 0,
        };
        self.failed + file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_maps_now_to_now() {
        let c = Clock::new();
        let wall = c.wall(Clock::now_ktime());
        let d = wall.duration_since(SystemTime::now()).unwrap_or_else(|e| e.duration());
        assert!(d < Duration::from_secs(1), "{d:?}");
        assert!(c.rfc3339(0).ends_with('Z'));
    }

    #[test]
    fn cached_timestamps_are_the_plain_ones() {
        let c = Clock::new();
        let mut cache = (0, String::new());
        let now = Clock::now_ktime();
        // A second's start, then nanoseconds with leading zeros and without.
        let second = now - (c.boot_epoch_ns + now as i128).rem_euclid(1_000_000_000) as u64;
        let nanos = [0, 5, 12_345, 100_000_000, 999_999_999].map(|n| second + n);
        for k in [now, now + 1, now + 999_999_999, now + 1_000_000_000, now + 5, 0]
            .into_iter()
            .chain(nanos)
        {
            assert_eq!(c.rfc3339_cached(k, &mut cache).as_str(), c.rfc3339(k), "{k}");
        }
        // Past 2554 the nanoseconds since the epoch no longer fit 64 bits.
        let far = Clock {
            boot_epoch_ns: i128::from(u64::MAX) + 1,
        };
        let mut cache = (0, String::new());
        assert_eq!(far.rfc3339_cached(5, &mut cache).as_str(), far.rfc3339(5));
        assert!(far.rfc3339(5).starts_with("2554-"), "{}", far.rfc3339(5));
    }

    #[test]
    fn record_skips_absent_fields() {
        let argv = vec!["sh".to_string()];
        let r = Record {
            ts: "t".into(),
            kind: "fork",
            server: Some("s"),
            pid: 1,
            exe: Json::Value("/bin/sh"),
            argv: Json::Value(&argv),
            child_pid: Some(2),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        // Rendered once, written as is: the same line.
        let (exe, args) = (
            serde_json::value::to_raw_value("/bin/sh").unwrap(),
            serde_json::value::to_raw_value(&argv).unwrap(),
        );
        let plain = serde_json::to_string(&r).unwrap();
        let rendered = Record {
            exe: Json::Rendered(&exe),
            argv: Json::Rendered(&args),
            ..r
        };
        assert_eq!(serde_json::to_string(&rendered).unwrap(), plain);
        assert_eq!(v["child_pid"], 2);
        assert_eq!(v["server"], "s");
        assert!(v.get("exit_code").is_none());
        assert!(v.get("ppid").is_some() && v.get("argv").is_some());
        assert!(v.get("tool").is_none() && v.get("detail").is_none());
    }

    #[test]
    fn mcp_fields_are_flattened_into_the_line() {
        let mut detail = serde_json::Map::new();
        detail.insert("duration_ns".into(), 5.into());
        let r = Record {
            kind: "tool_call",
            tool: Some("read_file"),
            call_id: Some("3"),
            detail: Some(detail),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (v["tool"].as_str(), v["call_id"].as_str()),
            (Some("read_file"), Some("3"))
        );
        assert_eq!(v["duration_ns"], 5);
        assert!(v.get("detail").is_none());
    }
}
