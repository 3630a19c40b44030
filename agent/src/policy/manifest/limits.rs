//! Size caps on what a manifest may declare, checked before anything is
//! compiled. A manifest directory may be writable by others, and compiling
//! is the costly part (300,000 patterns took 17 s): the caps keep one
//! manifest, and all of them together, to what a real server needs many
//! times over (the shipped manifests declare at most a few dozen entries).

use super::{
    error::EntryError,
    schema::{ManifestFile, OutboundSpec},
};

/// Patterns (paths, programs, hosts, addresses, ports, regexes, tools, pins)
/// one manifest may declare.
pub const MAX_PATTERNS: usize = 4096;
/// Patterns all manifests together may declare.
pub const MAX_TOTAL_PATTERNS: usize = 16384;
/// Bytes of one pattern (PATH_MAX).
pub const MAX_PATTERN_BYTES: usize = 4096;
/// Depth of nested objects and arrays (the schema's deepest value,
/// `tools.T.network.outbound.allow_host[0]`, is 6 deep).
pub const MAX_NESTING: usize = 16;

/// What exceeds a cap, and where (`field`, the offending value).
pub(super) type Exceeded = (String, String, EntryError);

/// The byte offset where objects and arrays in `text` first nest deeper than
/// `MAX_NESTING`, if they do. A scan, not a parse: serde_json's own limit
/// (128) is fixed, and placing the error needs only the brackets outside
/// strings.
pub(super) fn nesting(text: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(i);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn strs(l: &[String]) -> Vec<&str> {
    l.iter().map(String::as_str).collect()
}

fn outbound<'a>(at: &str, o: &'a OutboundSpec, fields: &mut Vec<(String, Vec<&'a str>)>) {
    fields.push((format!("{at}.allow_host"), strs(&o.allow_host)));
    fields.push((format!("{at}.allow_transport"), strs(&o.allow_transport)));
    // Ports are numbers: counted, never long.
    fields.push((format!("{at}.allow_port"), vec![""; o.allow_port.len()]));
}

/// Every pattern of a manifest as written, by field.
fn fields(raw: &ManifestFile) -> Vec<(String, Vec<&str>)> {
    let mut fields: Vec<(String, Vec<&str>)> = vec![
        ("read".into(), strs(&raw.read)),
        ("write".into(), strs(&raw.write)),
        ("listen".into(), strs(&raw.listen)),
        ("exec".into(), strs(&raw.exec)),
        ("match.server".into(), strs(&raw.matcher.server)),
        ("match.exe".into(), strs(&raw.matcher.exe)),
        ("match.argv".into(), strs(&raw.matcher.argv)),
        (
            "args".into(),
            raw.args
                .iter()
                .flat_map(|(k, a)| [k.as_str(), a.from.as_str()].into_iter().chain(a.flag.as_deref()))
                .collect(),
        ),
        (
            "network.inbound.allow_host".into(),
            strs(&raw.network.inbound.allow_host),
        ),
    ];
    outbound("network.outbound", &raw.network.outbound, &mut fields);
    for (tool, spec) in &raw.tools {
        let at = format!("tools.{tool}");
        fields.push((at.clone(), vec![tool.as_str()]));
        for (cat, l) in [("read", &spec.read), ("write", &spec.write), ("exec", &spec.exec)] {
            if let Some(l) = l {
                fields.push((format!("{at}.{cat}"), strs(l)));
            }
        }
        if let Some(n) = &spec.network {
            if let Some(o) = &n.outbound {
                outbound(&format!("{at}.network.outbound"), o, &mut fields);
            }
            if let Some(i) = &n.inbound {
                fields.push((format!("{at}.network.inbound.allow_host"), strs(&i.allow_host)));
            }
        }
    }
    if let Some(p) = &raw.pins {
        fields.push((
            "pins".into(),
            p.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]).collect(),
        ));
    }
    fields
}

/// Checks the per-manifest caps; returns the number of patterns.
pub(super) fn check(raw: &ManifestFile) -> Result<usize, Exceeded> {
    let fields = fields(raw);
    let mut total = 0;
    for (field, l) in &fields {
        if let Some((i, long)) = l.iter().enumerate().find(|(_, p)| p.len() > MAX_PATTERN_BYTES) {
            return Err((
                format!("{field}[{i}]"),
                long.chars().take(64).collect(),
                EntryError::PatternTooLong {
                    len: long.len(),
                    cap: MAX_PATTERN_BYTES,
                },
            ));
        }
        total += l.len();
    }
    if total > MAX_PATTERNS {
        let (field, l) = fields.iter().max_by_key(|(_, l)| l.len()).expect("fields listed");
        // Placed where the field's key is written.
        let key = field.rsplit('.').next().unwrap_or(field).to_owned();
        return Err((
            field.clone(),
            key,
            EntryError::TooManyPatterns {
                count: total,
                cap: MAX_PATTERNS,
                field: field.clone(),
                in_field: l.len(),
            },
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn caps_refuse_with_the_field_and_a_clear_error() {
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("\"/p{i}\"")).collect();
        let e = parse(&format!("{{\"exec\": [\"git\"],\n \"read\": [{}]}}", many.join(","))).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("read", 2), "{e}");
        assert!(e.what.contains("too many patterns: 4098 (at most 4096"), "{e}");
        let long = format!("/{}", "a".repeat(MAX_PATTERN_BYTES));
        let e = parse(&format!(r#"{{"tools": {{"t": {{"write": ["/ok", "{long}"]}}}}}}"#)).unwrap_err();
        assert_eq!(e.field, "tools.t.write[1]", "{e}");
        assert!(e.what.contains("pattern of 4097 bytes (at most 4096)"), "{e}");
        let deep = format!("{{\"read\": {}{}}}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        let e = parse(&deep).unwrap_err();
        assert!(e.what.contains("nested more than 16 deep"), "{e}");
        // Brackets inside strings are text.
        assert!(nesting(&format!("{{\"read\": [\"/{}\"]}}", "[{".repeat(40))).is_none());
        let ok = parse(r#"{"read": ["/a"], "network": {"outbound": {"allow_host": ["x.org"], "allow_port": [443]}}}"#);
        assert_eq!(ok.unwrap().patterns, 3);
    }
}
