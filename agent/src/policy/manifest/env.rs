//! `${env:NAME}` in path grants: a value of the server's own environment
//! (`MEMORY_FILE_PATH`...), read from `/proc/PID/environ` when it is put
//! under watch. A value is used only when it is a plain absolute path: no
//! `..`, no glob characters, bounded; otherwise (or unset) the grant that
//! names it is dropped, with a warning saying why.

use std::io::Read as _;

/// What is read of a process's environment at most.
pub const ENVIRON_MAX_BYTES: u64 = 256 * 1024;
/// The longest value used as a path.
pub const VALUE_MAX_BYTES: usize = 4096;

/// The prefix of an environment reference inside `${…}`.
pub const PREFIX: &str = "env:";

/// Whether `NAME` of `${env:NAME}` is a variable name.
pub fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f == '_' || f.is_ascii_alphabetic())
        && c.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && name.len() <= 128
}

/// The variables a manifest's path grants name (`${env:NAME}`), server-wide and per tool.
pub fn refs(m: &super::Manifest) -> Vec<String> {
    let tools = m
        .tools
        .values()
        .flat_map(|t| t.read.iter().chain(t.write.iter()).flatten());
    let mut out: Vec<String> = m
        .read
        .iter()
        .chain(&m.write)
        .chain(tools)
        .flat_map(|p| super::compile::arg_refs(p))
        .filter_map(|r| r.strip_prefix(PREFIX).map(str::to_owned))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The environment of `pid`, bounded (empty when unreadable: the process is gone).
pub fn read_environ(pid: u32) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/environ")) {
        let _ = f.take(ENVIRON_MAX_BYTES).read_to_end(&mut out);
    }
    out
}

/// The values of `names` in `environ` usable as paths, and a warning for
/// each name that is not (unset, relative, `..`, glob characters, too long).
pub fn bind(names: &[String], environ: &[u8]) -> (Vec<(String, String)>, Vec<String>) {
    let mut values = Vec::new();
    let mut warnings = Vec::new();
    for name in names {
        let key = format!("{name}=");
        let found = environ
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(key.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let why = match &found {
            None => Some("is not set in the server's environment".to_owned()),
            Some(v) if v.len() > VALUE_MAX_BYTES => Some(format!("is longer than {VALUE_MAX_BYTES} bytes")),
            Some(v) if !v.starts_with('/') => Some(format!("is not an absolute path ({v:?})")),
            Some(v) if v.split('/').any(|c| c == "..") => Some(format!("has a `..` component ({v:?})")),
            Some(v) if v.contains(['*', '?', '[', ']', '{', '}']) => Some(format!("holds glob characters ({v:?})")),
            Some(_) => None,
        };
        match (why, found) {
            (None, Some(v)) => values.push((format!("{PREFIX}{name}"), v.trim_end_matches('/').to_owned())),
            (why, _) => warnings.push(format!(
                "${{{PREFIX}{name}}} {}: the grants naming it are dropped",
                why.unwrap_or_default()
            )),
        }
    }
    (values, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_absolute_values_bind() {
        let environ = b"HOME=/root\0MEMORY_FILE_PATH=/srv/mem/memory.json\0REL=data/x\0UP=/srv/../etc\0STAR=/srv/*\0";
        let names: Vec<String> = ["MEMORY_FILE_PATH", "REL", "UP", "STAR", "MISSING"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (values, warnings) = bind(&names, environ);
        assert_eq!(
            values,
            [("env:MEMORY_FILE_PATH".to_owned(), "/srv/mem/memory.json".to_owned())]
        );
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[3].contains("${env:MISSING} is not set"), "{warnings:?}");
        assert!(warnings[1].contains("`..`"));
    }

    #[test]
    fn names_are_variable_names() {
        assert!(valid_name("MEMORY_FILE_PATH") && valid_name("_x1"));
        assert!(!valid_name("1X") && !valid_name("A-B") && !valid_name(""));
    }

    #[test]
    fn the_environment_of_a_live_process_is_read() {
        let env = read_environ(std::process::id());
        assert!(env.split(|&b| b == 0).any(|v| v.starts_with(b"PATH=")));
        assert!(read_environ(u32::MAX).is_empty());
    }
}
