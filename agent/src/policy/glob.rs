//! Path patterns: `*` (within one component), `**` (any depth), `?`, `{a,b}`.
//! A pattern with no wildcard names a file or a directory: it matches the path
//! itself and everything below it (ToolHive's mount semantics).

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
};

use regex::Regex;

/// Compiled patterns shared by every server (a clone of a `Regex` or a
/// `RegexSet` shares its program and caches): each server's baseline is the
/// same few dozen globs, and compiling them per server cost most of the
/// agent's memory with ten servers. Bounded: cleared when full.
static REGEXES: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Default::default);
static SETS: LazyLock<Mutex<HashMap<String, regex::RegexSet>>> = LazyLock::new(Default::default);
const CACHE_MAX: usize = 4096;

fn shared_regex(re: &str) -> Result<Regex, regex::Error> {
    let mut cache = REGEXES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = cache.get(re) {
        return Ok(r.clone());
    }
    let r = Regex::new(re)?;
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(re.to_owned(), r.clone());
    Ok(r)
}

#[derive(Clone, Debug)]
pub struct PathGlob {
    /// The pattern as written after `~` and argument expansion.
    pub text: String,
    re: Regex,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GlobError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern {0:?} is not absolute (start it with / or ~)")]
    NotAbsolute(String),
    #[error("pattern {0:?} has an unclosed {{")]
    UnclosedBrace(String),
    #[error("pattern of {len} bytes is too large to compile (it starts {head:?})")]
    TooLarge { len: usize, head: String },
    #[error("name pattern {0:?} spells more than {NAME_ALTERNATIVES_MAX} names with its braces")]
    TooManyAlternatives(String),
}

/// Names a name pattern may spell with its braces: each is matched on every
/// exec, and `{a,b}` repeated 40 times spells 2^40 of them.
pub const NAME_ALTERNATIVES_MAX: usize = 1024;

impl PathGlob {
    pub fn new(pattern: &str) -> Result<Self, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if !pattern.starts_with('/') && !pattern.starts_with("**") {
            return Err(GlobError::NotAbsolute(pattern.to_owned()));
        }
        let trimmed = if pattern.len() > 1 {
            pattern.trim_end_matches('/')
        } else {
            pattern
        };
        let wild = trimmed.contains(['*', '?', '{']);
        let mut re = String::from("^");
        re.push_str(&translate(trimmed)?);
        if !wild {
            // A plain path: the file, or the directory and what is below it.
            if trimmed == "/" {
                re = "^/.*".into();
            } else {
                re.push_str("(?:/.*)?");
            }
        }
        re.push('$');
        // `translate` escapes every character and balances braces, so the one
        // way left to fail is the regex size limit.
        let re = shared_regex(&re).map_err(|_| GlobError::TooLarge {
            len: pattern.len(),
            head: pattern.chars().take(40).collect(),
        })?;
        Ok(Self {
            text: pattern.to_owned(),
            re,
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.re.is_match(path)
    }

    /// The regular expression it compiles to (for a `RegexSet` of many).
    pub fn regex(&self) -> &str {
        self.re.as_str()
    }
}

/// Many patterns matched in one pass (a path is checked against a server's
/// whole declaration and baseline for every file event).
#[derive(Clone, Debug)]
pub struct GlobSet(regex::RegexSet);

impl GlobSet {
    pub fn new<'a>(globs: impl IntoIterator<Item = &'a PathGlob>) -> Self {
        let patterns: Vec<&str> = globs.into_iter().map(PathGlob::regex).collect();
        let key = patterns.join("\n");
        let mut cache = SETS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = cache.get(&key) {
            return Self(set.clone());
        }
        let set = regex::RegexSet::new(&patterns).expect("each pattern compiled alone");
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, set.clone());
        Self(set)
    }

    pub fn matches(&self, path: &str) -> bool {
        self.0.is_match(path)
    }

    /// Index of the first pattern that matches.
    pub fn first(&self, path: &str) -> Option<usize> {
        self.0.matches(path).iter().next()
    }
}

fn translate(p: &str) -> Result<String, GlobError> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut depth = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if chars.get(i + 1) == Some(&'*') => {
                // `**/` also matches zero directories.
                if chars.get(i + 2) == Some(&'/') {
                    out.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    out.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '{' => {
                depth += 1;
                out.push_str("(?:");
            }
            '}' if depth > 0 => {
                depth -= 1;
                out.push(')');
            }
            ',' if depth > 0 => out.push('|'),
            _ => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    if depth > 0 {
        return Err(GlobError::UnclosedBrace(p.to_owned()));
    }
    Ok(out)
}

/// Shell-style match of a single name (no `/` semantics): `*`, `?`, `{a,b}`.
/// Called for every exec, so no regex is compiled: braces are expanded and
/// each alternative matched directly.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    expand_braces(pattern)
        .iter()
        .any(|p| wildcard(p.as_bytes(), name.as_bytes()))
}

/// A name pattern that spells at most [`NAME_ALTERNATIVES_MAX`] names.
pub fn check_name(pattern: &str) -> Result<(), GlobError> {
    if alternatives(pattern) > NAME_ALTERNATIVES_MAX {
        return Err(GlobError::TooManyAlternatives(pattern.to_owned()));
    }
    Ok(())
}

/// How many names [`expand_braces`] makes of `p`, without making them.
fn alternatives(p: &str) -> usize {
    let (Some(open), Some(close)) = (p.find('{'), p.find('}')) else {
        return 1;
    };
    if close < open {
        return 1;
    }
    let n = p[open + 1..close].split(',').count();
    n.saturating_mul(alternatives(&p[close + 1..]))
}

/// `a{b,c}d{e,f}` -> `abde`, `abdf`, `acde`, `acdf` (no nesting).
fn expand_braces(p: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (p.find('{'), p.find('}')) else {
        return vec![p.to_owned()];
    };
    if close < open {
        return vec![p.to_owned()];
    }
    let (head, alts, tail) = (&p[..open], &p[open + 1..close], &p[close + 1..]);
    expand_braces(tail)
        .into_iter()
        .flat_map(|t| {
            alts.split(',')
                .map(move |a| format!("{head}{a}{t}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `*` (any run) and `?` (one character) against the whole name.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        PathGlob::new(p).unwrap().matches(path)
    }

    #[test]
    fn plain_paths_cover_their_subtree() {
        assert!(m("/home/me/projects", "/home/me/projects"));
        assert!(m("/home/me/projects", "/home/me/projects/a/b.txt"));
        assert!(m("/home/me/projects/", "/home/me/projects/a"));
        assert!(!m("/home/me/projects", "/home/me/projects2"));
        assert!(m("/", "/etc/passwd"));
    }

    #[test]
    fn wildcards() {
        assert!(m("/usr/lib/python3*/**", "/usr/lib/python3.11/os.py"));
        assert!(!m("/usr/lib/python3*/*", "/usr/lib/python3.11/a/os.py"));
        assert!(m("**/node_modules/**", "/x/y/node_modules/a/index.js"));
        assert!(m("**/.ssh/id_*", "/.ssh/id_rsa"));
        assert!(m("**/.ssh/id_*", "/home/u/.ssh/id_ed25519"));
        assert!(!m("**/.ssh/id_*", "/home/u/.ssh/known_hosts"));
        assert!(m("/etc/{passwd,group}", "/etc/group"));
        assert!(!m("/etc/{passwd,group}", "/etc/shadow"));
        assert!(m("/dev/tty?", "/dev/tty1"));
        assert!(m("/a/b.c", "/a/b.c") && !m("/a/b.c", "/a/bxc"));
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(PathGlob::new("").unwrap_err(), GlobError::Empty);
        assert!(matches!(PathGlob::new("etc/x"), Err(GlobError::NotAbsolute(_))));
        assert!(matches!(PathGlob::new("/a/{b,c"), Err(GlobError::UnclosedBrace(_))));
    }

    #[test]
    fn sets_match_like_their_patterns() {
        let g = [PathGlob::new("/etc/ssl").unwrap(), PathGlob::new("**/.ssh/**").unwrap()];
        let set = GlobSet::new(&g);
        assert_eq!(set.first("/home/u/.ssh/id_rsa"), Some(1));
        assert!(set.matches("/etc/ssl/certs/x.pem"));
        assert!(!set.matches("/etc/passwd"));
        assert!(!GlobSet::new(&[]).matches("/x"));
    }

    /// Seen while writing the manifest properties: a pattern too large for
    /// the regex engine was refused as having "an unclosed {" it did not have.
    #[test]
    fn a_pattern_too_large_to_compile_says_so() {
        let e = PathGlob::new(&format!("/{}", "*a".repeat(10_000))).unwrap_err();
        assert!(matches!(e, GlobError::TooLarge { len: 20001, .. }), "{e}");
        assert!(e.to_string().contains("too large to compile"), "{e}");
    }

    #[test]
    fn names() {
        assert!(name_matches("python3*", "python3.11"));
        assert!(name_matches("{sh,bash}", "bash"));
        assert!(!name_matches("git", "gitk"));
        assert!(name_matches("python{,2,3,3.*}", "python"));
        assert!(name_matches("python{,2,3,3.*}", "python3.11"));
        assert!(!name_matches("python{,2,3,3.*}", "python4"));
        assert!(name_matches("{npm,npx}-cli.js", "npx-cli.js"));
        assert!(name_matches("a*b?c", "axxxbyc") && !name_matches("a*b?c", "axxxbc"));
    }
}
