//! An event line written field by field: the text serde_json makes of a
//! [`Record`], byte for byte (the tests compare them), for about half the
//! cost, since every event may become a line.
//!
//! What serde costs here: the flattened `detail` makes the derived
//! `Serialize` a map, so each of the ~20 keys of a line is escaped like a
//! value, and each string goes through the escaper a byte at a time. Here
//! keys are literals, a string is copied as it is when none of its bytes
//! needs escaping (one pass, no branch per byte), and numbers go through
//! `itoa` (serde_json's own). A string that does need escaping is handed to
//! serde_json itself, so escaping (control bytes, quotes, backslashes; the
//! U+FFFD of repaired UTF-8 and U+2028 left as they are) is serde_json's and
//! cannot drift. The few lines with nested values (DNS, MCP `detail`) write
//! those values with serde_json as well.
//!
//! Fewer pieces per line: a process's fields (`pid` to `argv`, and its `gid`
//! and `comm`) come rendered once per process ([`proc_fields`]); the
//! program's own names (kind, op, syscall, errno...) skip the escape check;
//! an access's words and booleans are copied as ready-made text.

use std::sync::LazyLock;

use serde::Serialize;
use serde_json::value::RawValue;

use super::{
    events::{Ancestor, DnsRecord, Json, Record},
    stamp::Stamp,
};
use crate::policy::activity::Access;

/// Appends `r`'s JSON text (no newline) to `out`.
pub fn write(r: &Record<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    // Every field named: a field added to `Record` fails to compile here
    // until it is written.
    let Record {
        ts,
        kind,
        server,
        pid,
        ppid,
        uid,
        exe,
        argv,
        proc_fields,
        tid,
        gid,
        comm,
        filename,
        interp,
        argv_truncated,
        ancestry,
        child_pid,
        exit_code,
        signal,
        reason,
        event_kind,
        lost,
        probe,
        cwd,
        stdio,
        fileless,
        written_then_exec,
        op,
        syscall,
        result,
        error,
        path,
        path_as_given,
        path_resolved,
        path_truncated,
        path2,
        from_user_memory,
        access,
        family,
        proto,
        addr,
        port,
        local_port,
        unix_path,
        hostname,
        exposed,
        dns,
        risk,
        target_pid,
        note,
        tool,
        call_id,
        calls_in_flight,
        detail,
    } = r;
    // A line of a file event is ~400 bytes; reused, the buffer keeps this.
    out.reserve(1024);
    let w = &mut Line(out);
    w.raw(b"{\"ts\":");
    ts.write(w)?;
    w.name(",\"kind\":", kind);
    w.field(",\"server\":", server)?;
    match proc_fields {
        Some(t) => w.raw(t.text.as_bytes()),
        None => w.proc_fields(*pid, *ppid, *uid, exe, argv)?,
    }
    if proc_fields.is_some_and(|t| t.ids) {
        debug_assert!(tid.is_none(), "a thread's line has its tid");
    } else {
        w.opt(",\"tid\":", tid)?;
        w.ids(gid, comm)?;
    }
    w.opt(",\"filename\":", filename)?;
    w.opt(",\"interp\":", interp)?;
    w.opt(",\"argv_truncated\":", argv_truncated)?;
    w.opt(",\"ancestry\":", ancestry)?;
    w.opt(",\"child_pid\":", child_pid)?;
    w.opt(",\"exit_code\":", exit_code)?;
    w.opt(",\"signal\":", signal)?;
    w.opt(",\"reason\":", reason)?;
    w.opt(",\"event_kind\":", event_kind)?;
    w.opt(",\"lost\":", lost)?;
    w.opt(",\"probe\":", probe)?;
    w.opt(",\"cwd\":", cwd)?;
    w.opt(",\"stdio\":", stdio)?;
    w.opt(",\"fileless\":", fileless)?;
    w.opt(",\"written_then_exec\":", written_then_exec)?;
    w.opt_name(",\"op\":", op);
    w.opt_name(",\"syscall\":", syscall);
    w.opt(",\"result\":", result)?;
    w.opt_name(",\"error\":", error);
    w.opt(",\"path\":", path)?;
    w.opt(",\"path_as_given\":", path_as_given)?;
    w.opt(",\"path_resolved\":", path_resolved)?;
    w.opt(",\"path_truncated\":", path_truncated)?;
    w.opt(",\"path2\":", path2)?;
    if *from_user_memory {
        w.field(",\"from_user_memory\":", from_user_memory)?;
    }
    w.opt(",\"access\":", access)?;
    w.opt_name(",\"family\":", family);
    w.opt_name(",\"proto\":", proto);
    w.opt(",\"addr\":", addr)?;
    w.opt(",\"port\":", port)?;
    w.opt(",\"local_port\":", local_port)?;
    w.opt(",\"unix_path\":", unix_path)?;
    w.opt(",\"hostname\":", hostname)?;
    w.opt(",\"exposed\":", exposed)?;
    w.opt(",\"dns\":", dns)?;
    w.opt_name(",\"risk\":", risk);
    w.opt(",\"target_pid\":", target_pid)?;
    w.opt_name(",\"note\":", note);
    w.opt(",\"tool\":", tool)?;
    w.opt(",\"call_id\":", call_id)?;
    w.opt(",\"calls_in_flight\":", calls_in_flight)?;
    for (k, v) in detail.iter().flatten() {
        w.raw(b",");
        k.as_str().write(w)?;
        w.raw(b":");
        w.serde(v)?;
    }
    w.raw(b"}");
    Ok(())
}

/// A line's `pid`, `ppid`, `uid`, `exe` and `argv` fields, and its `gid`
/// and `comm` when given, as [`write`] writes them: the text a process's
/// lines share (`Record::proc_fields`). Also returns where `argv` ends.
pub fn proc_fields(
    pid: u32,
    ppid: u32,
    uid: u32,
    exe: Json<'_, str>,
    argv: Json<'_, [String]>,
    ids: Option<(u32, &str)>,
) -> (String, usize) {
    let mut out = Vec::new();
    let mut w = Line(&mut out);
    let written = w.proc_fields(pid, ppid, uid, &exe, &argv).and_then(|()| {
        let head = w.0.len();
        w.ids(&ids.map(|i| i.0), &ids.map(|i| i.1))?;
        Ok(head)
    });
    let head = written.expect("numbers, JSON text and strings write without error");
    (String::from_utf8(out).expect("JSON text"), head)
}

/// The line being written.
struct Line<'o>(&'o mut Vec<u8>);

impl Line<'_> {
    #[inline(always)]
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    /// `key` is the literal `,"name":` (inlined: its length is a constant).
    #[inline(always)]
    fn field<T: Value + ?Sized>(&mut self, key: &str, v: &T) -> serde_json::Result<()> {
        self.raw(key.as_bytes());
        v.write(self)
    }

    /// Written when present (`skip_serializing_if = "Option::is_none"`).
    #[inline(always)]
    fn opt<T: Value>(&mut self, key: &str, v: &Option<T>) -> serde_json::Result<()> {
        match v {
            Some(v) => self.field(key, v),
            None => Ok(()),
        }
    }

    /// A name of the program's own (a kind, an operation, a syscall or
    /// errno name: `&'static`, never text from a process or the kernel):
    /// none needs escaping, so it is copied as it is (debug builds check).
    #[inline(always)]
    fn name(&mut self, key: &str, v: &'static str) {
        debug_assert!(plain(v.as_bytes()), "{v:?} needs escaping");
        self.raw(key.as_bytes());
        self.raw(b"\"");
        self.raw(v.as_bytes());
        self.raw(b"\"");
    }

    #[inline(always)]
    fn opt_name(&mut self, key: &str, v: &Option<&'static str>) {
        if let Some(v) = v {
            self.name(key, v)
        }
    }

    /// A string: copied between quotes when `bytes` (those of `s()`) need no
    /// escaping, else serde_json's rendering.
    #[inline(always)]
    fn text<'s>(&mut self, bytes: &[u8], s: impl FnOnce() -> &'s str) -> serde_json::Result<()> {
        if plain(bytes) {
            self.raw(b"\"");
            self.raw(bytes);
            self.raw(b"\"");
            Ok(())
        } else {
            self.serde(s())
        }
    }

    /// See [`proc_fields`].
    #[inline(always)]
    fn proc_fields(
        &mut self,
        pid: u32,
        ppid: u32,
        uid: u32,
        exe: &Json<'_, str>,
        argv: &Json<'_, [String]>,
    ) -> serde_json::Result<()> {
        self.field(",\"pid\":", &pid)?;
        self.field(",\"ppid\":", &ppid)?;
        self.field(",\"uid\":", &uid)?;
        self.field(",\"exe\":", exe)?;
        self.field(",\"argv\":", argv)
    }

    /// `gid` and `comm`, each when present.
    #[inline(always)]
    fn ids(&mut self, gid: &Option<u32>, comm: &Option<&str>) -> serde_json::Result<()> {
        self.opt(",\"gid\":", gid)?;
        self.opt(",\"comm\":", comm)
    }

    /// A JSON array of `items`.
    fn list<T: Value>(&mut self, items: impl Iterator<Item = T>) -> serde_json::Result<()> {
        self.raw(b"[");
        for (i, v) in items.enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            v.write(self)?;
        }
        self.raw(b"]");
        Ok(())
    }

    fn serde<T: Serialize + ?Sized>(&mut self, v: &T) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *self.0, v)
    }
}

/// A value of a line, written as serde_json writes it.
trait Value {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()>;
}

/// Whether no byte of `s` needs escaping (control bytes, `"` and `\`),
/// eight bytes at a time with the exact tests for "some byte below n" and
/// "some byte zero" on a word (Anderson's bit hacks); the tail as the last
/// eight bytes (read twice, not copied: a copy to the stack then read as a
/// word stalled on store forwarding), a string under eight byte by byte.
fn plain(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    fn word(w: &[u8]) -> bool {
        let x = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        (below_space | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\')))) == 0
    }
    if s.len() < 8 {
        return !s.iter().fold(false, |bad, b| bad | needs_escape(*b));
    }
    let ok = s.chunks_exact(8).fold(true, |ok, w| ok & word(w));
    ok && word(&s[s.len() - 8..])
}

/// Bytes a JSON string cannot hold as they are.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

impl Value for str {
    #[inline]
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        w.text(self.as_bytes(), || self)
    }
}

/// The timestamp's bytes checked as they are (`as_str` would check UTF-8).
impl Value for Stamp {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        w.text(self.as_bytes(), || self.as_str())
    }
}

impl<T: Value + ?Sized> Value for &T {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        (**self).write(w)
    }
}

impl Value for String {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        self.as_str().write(w)
    }
}

/// Each word copied as a constant (one slice of either length was a call
/// to `memmove`).
impl Value for bool {
    #[inline(always)]
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        if *self {
            w.raw(b"true")
        } else {
            w.raw(b"false")
        }
        Ok(())
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
                w.raw(itoa::Buffer::new().format(*self).as_bytes());
                Ok(())
            }
        }
    )*};
}
integers!(u16, u32, u64, i32, i64, usize);

/// `null` when absent (`server` is always written).
impl<T: Value> Value for Option<T> {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        match self {
            Some(v) => v.write(w),
            None => {
                w.raw(b"null");
                Ok(())
            }
        }
    }
}

impl<T: Value> Value for [T] {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        w.list(self.iter())
    }
}

impl<T: Value> Value for Vec<T> {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        self.as_slice().write(w)
    }
}

impl<T: Value, const N: usize> Value for [T; N] {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        self.as_slice().write(w)
    }
}

/// A file call's access, as words: the array's text for each of the 128
/// combinations made once (written word by word, it was ~3% of a flood).
impl Value for Access {
    #[inline(always)]
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        static TEXT: LazyLock<Vec<String>> = LazyLock::new(|| {
            (0..1 << 7)
                .map(|bits| {
                    let mut line = Vec::new();
                    Line(&mut line).list(access_of(bits).each_word()).expect("words");
                    String::from_utf8(line).expect("JSON text")
                })
                .collect()
        });
        w.raw(TEXT[access_bits(*self)].as_bytes());
        Ok(())
    }
}

/// An access as 7 bits, and back.
fn access_bits(a: Access) -> usize {
    let Access {
        read,
        write,
        create,
        truncate,
        append,
        directory,
        attributes,
    } = a;
    [read, write, create, truncate, append, directory, attributes]
        .iter()
        .enumerate()
        .fold(0, |bits, (i, on)| bits | usize::from(*on) << i)
}

fn access_of(bits: usize) -> Access {
    let on = |i: usize| bits & 1 << i != 0;
    Access {
        read: on(0),
        write: on(1),
        create: on(2),
        truncate: on(3),
        append: on(4),
        directory: on(5),
        attributes: on(6),
    }
}

/// Rendered once per process (exe, argv): copied as it is.
impl Value for RawValue {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        w.raw(self.get().as_bytes());
        Ok(())
    }
}

impl<T: Value + ?Sized> Value for Json<'_, T> {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        match self {
            Json::Value(v) => v.write(w),
            Json::Rendered(r) => r.write(w),
        }
    }
}

impl Value for Ancestor<'_> {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        w.field("{\"pid\":", &self.pid)?;
        w.field(",\"exe\":", self.exe)?;
        w.raw(b"}");
        Ok(())
    }
}

/// DNS lines are few: serde_json's own rendering.
impl Value for DnsRecord {
    fn write(&self, w: &mut Line<'_>) -> serde_json::Result<()> {
        w.serde(self)
    }
}

#[cfg(test)]
#[path = "record_json/tests.rs"]
mod tests;
