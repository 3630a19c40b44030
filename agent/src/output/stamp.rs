//! An event line's time: RFC 3339 text held inline, since every event of a
//! flood has one (a `String` each was an allocation and a free per line).
//! Not `compact_str` (used for `comm`): it holds 24 bytes inline, and a
//! timestamp with nanoseconds is 30.

use std::{fmt, ops::Deref};

use serde::{Serialize, Serializer};

/// RFC 3339 UTC with nanoseconds is 30 bytes (`2026-12-01T13:27:55.980878455Z`).
const INLINE: usize = 32;

/// Timestamp text: inline up to 32 bytes, else a `String`.
#[derive(Clone, PartialEq, Eq)]
pub enum Stamp {
    Inline { len: u8, text: [u8; INLINE] },
    Text(String),
}

impl Stamp {
    pub fn as_str(&self) -> &str {
        match self {
            Stamp::Inline { len, text } => std::str::from_utf8(&text[..usize::from(*len)]).expect("built from a str"),
            Stamp::Text(s) => s,
        }
    }

    /// The text's bytes (no UTF-8 check: it was a `str`).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Stamp::Inline { len, text } => &text[..usize::from(*len)],
            Stamp::Text(s) => s.as_bytes(),
        }
    }

    /// `seconds` (RFC 3339 up to the second, without its zone), a dot,
    /// `nanos` (below 10^9) as nine digits and `Z`: written in place, since
    /// every event line has one.
    pub fn with_nanos(seconds: &str, nanos: u32) -> Self {
        let len = seconds.len() + 11;
        if len > INLINE {
            return Stamp::Text(format!("{seconds}.{nanos:09}Z"));
        }
        let mut text = [0u8; INLINE];
        text[..seconds.len()].copy_from_slice(seconds.as_bytes());
        text[seconds.len()] = b'.';
        let mut n = nanos;
        for d in text[seconds.len() + 1..len - 1].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        text[len - 1] = b'Z';
        Stamp::Inline { len: len as u8, text }
    }

    /// `parts` one after the other.
    pub fn concat(parts: &[&str]) -> Self {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > INLINE {
            return Stamp::Text(parts.concat());
        }
        let mut text = [0u8; INLINE];
        let mut at = 0;
        for p in parts {
            text[at..at + p.len()].copy_from_slice(p.as_bytes());
            at += p.len();
        }
        Stamp::Inline { len: len as u8, text }
    }
}

impl Default for Stamp {
    fn default() -> Self {
        Stamp::Inline {
            len: 0,
            text: [0; INLINE],
        }
    }
}

impl Deref for Stamp {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Stamp {
    fn from(s: &str) -> Self {
        Stamp::concat(&[s])
    }
}

impl From<String> for Stamp {
    fn from(s: String) -> Self {
        if s.len() > INLINE {
            Stamp::Text(s)
        } else {
            Stamp::concat(&[&s])
        }
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_text_read_back_as_given() {
        let nanos = "2026-12-01T13:27:55.980878455Z";
        for s in ["", "t", nanos, "2026-12-01T13:27:55.980878455+00:00 and more"] {
            let st = Stamp::from(s);
            assert_eq!((st.as_str(), &*Stamp::from(s.to_owned())), (s, s));
            assert_eq!(st.as_bytes(), s.as_bytes());
            assert_eq!(serde_json::to_string(&st).unwrap(), serde_json::to_string(s).unwrap());
        }
        assert!(matches!(Stamp::from(nanos), Stamp::Inline { .. }));
        assert_eq!(
            Stamp::concat(&["2026-12-01T13:27:55", ".", "000000001", "Z"]).as_str(),
            "2026-12-01T13:27:55.000000001Z"
        );
        for (nanos, text) in [
            (1, "2026-12-01T13:27:55.000000001Z"),
            (980_878_455, "2026-12-01T13:27:55.980878455Z"),
            (999_999_999, "2026-12-01T13:27:55.999999999Z"),
            (0, "2026-12-01T13:27:55.000000000Z"),
        ] {
            let st = Stamp::with_nanos("2026-12-01T13:27:55", nanos);
            assert!(matches!(st, Stamp::Inline { .. }));
            assert_eq!(st.as_str(), text);
        }
        // A year past 9999 does not fit inline.
        assert_eq!(
            Stamp::with_nanos("+12026-12-01T13:27:55", 7).as_str(),
            "+12026-12-01T13:27:55.000000007Z"
        );
    }
}
