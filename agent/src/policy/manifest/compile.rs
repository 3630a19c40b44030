//! Manifest text to compiled form: globs, host patterns, `${args}`
//! bindings and `~`; warnings for tool grants wider than the server's.

use std::{collections::BTreeMap, path::Path};

use regex::Regex;

use super::{
    error::{EntryError, Failed},
    model::{ArgBinding, ExePattern, Manifest, Outbound, ToolGrant},
    schema::{InboundSpec, ManifestFile, OutboundSpec, ToolSpec},
};
use crate::{
    mcp::pins::ExpectedPins,
    policy::{
        glob::PathGlob,
        net::{HostPattern, ListenSpec},
    },
};

impl Manifest {
    /// Checks every entry; an error names the field, the value, and what is wrong.
    pub(super) fn compile(
        raw: ManifestFile,
        file: Option<&Path>,
        stem: &str,
    ) -> Result<Self, (String, String, EntryError)> {
        let name = raw.name.clone().unwrap_or_else(|| stem.to_owned());
        crate::pipeline::servers::validate_name(&name).map_err(|e| ("name".to_owned(), name.clone(), e.into()))?;
        let mut args = Vec::new();
        for (k, a) in &raw.args {
            let from = Regex::new(&a.from).map_err(|e| (format!("args.{k}.from"), a.from.clone(), e.into()))?;
            args.push((
                k.clone(),
                ArgBinding {
                    from,
                    flag: a.flag.clone(),
                },
            ));
        }
        let arg_names: Vec<&str> = args.iter().map(|(k, _)| k.as_str()).collect();
        check_paths(&raw.read, "read", &arg_names)?;
        check_paths(&raw.write, "write", &arg_names)?;
        let mut match_exe = Vec::new();
        for (i, e) in raw.matcher.exe.iter().enumerate() {
            match_exe.push(ExePattern::parse(e).map_err(|err| (format!("match.exe[{i}]"), e.clone(), err.into()))?);
        }
        let mut match_argv = Vec::new();
        for (i, e) in raw.matcher.argv.iter().enumerate() {
            match_argv.push(Regex::new(e).map_err(|err| (format!("match.argv[{i}]"), e.clone(), err.into()))?);
        }
        for (i, s) in raw.matcher.server.iter().enumerate() {
            crate::pipeline::servers::validate_name(s)
                .map_err(|e| (format!("match.server[{i}]"), s.clone(), e.into()))?;
        }
        let outbound = compile_outbound(&raw.network.outbound, "network.outbound")?;
        let inbound = compile_inbound(&raw.network.inbound, "network.inbound")?;
        let mut listen = Vec::new();
        for (i, l) in raw.listen.iter().enumerate() {
            listen.push(ListenSpec::parse(l).map_err(|e| (format!("listen[{i}]"), l.clone(), e.into()))?);
        }
        let exec = compile_exec(&raw.exec, "exec")?;
        let mut tools = BTreeMap::new();
        for (tool, spec) in &raw.tools {
            if tool.is_empty() {
                return Err(("tools".into(), String::new(), EntryError::EmptyToolName));
            }
            tools.insert(tool.clone(), compile_tool(tool, spec, &arg_names)?);
        }
        if let Some(g) = &raw.gate {
            super::gate::check(g, &arg_names)?;
        }
        let pins = match &raw.pins {
            None => None,
            Some(p) => {
                let mut out = ExpectedPins::new();
                for (tool, hash) in p {
                    if tool.is_empty() {
                        return Err(("pins".into(), hash.clone(), EntryError::EmptyToolName));
                    }
                    let hash = pin_hash(hash)
                        .ok_or_else(|| (format!("pins.{tool}"), hash.clone(), EntryError::Pin(hash.clone())))?;
                    out.insert(tool.clone(), hash);
                }
                Some(out)
            }
        };
        if let Some(g) = &raw.gate {
            g.secrets
                .check()
                .map_err(|e| ("gate.secrets".into(), String::new(), EntryError::SecretRule(e)))?;
        }
        let mut m = Self {
            name,
            file: file.map(Path::to_owned),
            mode: raw.mode,
            match_servers: raw.matcher.server.clone(),
            match_exe,
            match_argv,
            args,
            read: raw.read.clone(),
            write: raw.write.clone(),
            outbound,
            inbound,
            listen,
            exec,
            tools,
            pins,
            gate: raw.gate.clone(),
            warnings: Vec::new(),
            patterns: 0,
            raw,
        };
        m.warnings = m.tool_warnings();
        Ok(m)
    }

    /// Tool grants that are valid but probably not what was meant.
    fn tool_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let readable: Vec<String> = self.read.iter().chain(&self.write).cloned().collect();
        for (tool, spec) in &self.raw.tools {
            let at = format!("tools.{tool}");
            if spec.read.is_none() && spec.write.is_none() && spec.network.is_none() && spec.exec.is_none() {
                out.push(format!("{at}: narrows nothing (give read, write, network or exec)"));
            }
            if let Some(pins) = &self.pins
                && !pins.contains_key(tool)
            {
                out.push(format!(
                    "{at}: `pins` has no tool {tool:?}: is the name spelled as the server lists it?"
                ));
            }
            let wider = |field: &str, i: usize, v: &str, within: &str| {
                format!(
                    "{at}.{field}[{i}]: {v:?} is not within the server-wide `{within}`: it widens the grant during {tool}'s calls"
                )
            };
            for (i, p) in spec.read.iter().flatten().enumerate() {
                if !path_within(p, &readable) {
                    out.push(wider("read", i, p, "read`/`write"));
                }
            }
            for (i, p) in spec.write.iter().flatten().enumerate() {
                if !path_within(p, &self.write) {
                    out.push(wider("write", i, p, "write"));
                }
            }
            if let Some(read) = &spec.read
                && spec.write.is_none()
                && self.write.iter().any(|w| !path_within(w, read))
            {
                out.push(format!(
                    "{at}: `read` is narrowed but `write` is not: the server-wide `write` still applies to its calls, \
                     and write implies read (give `\"write\": []` or a narrowed list)"
                ));
            }
            for (i, e) in spec.exec.iter().flatten().enumerate() {
                if !self.raw.exec.iter().any(|s| s == e) && !self.exec.iter().any(|s| s.matches(e)) {
                    out.push(wider("exec", i, e, "exec"));
                }
            }
            let grant = &self.tools[tool];
            if let Some(o) = &grant.outbound {
                out.extend(
                    outbound_widening(o, &self.outbound)
                        .into_iter()
                        .map(|w| format!("{at}.network.outbound{w}: it widens the grant during {tool}'s calls")),
                );
            }
            if let Some(inb) = &grant.inbound
                && !self.inbound.is_empty()
            {
                if inb.is_empty() {
                    out.push(format!(
                        "{at}.network.inbound.allow_host: empty (any peer) while the server-wide list is not: \
                         it widens the grant during {tool}'s calls"
                    ));
                }
                for (i, h) in inb.iter().enumerate() {
                    if !self.inbound.iter().any(|s| s.host.covers(&h.host)) {
                        out.push(format!(
                            "{at}.network.inbound.allow_host[{i}]: not within the server-wide `network.inbound`: \
                             it widens the grant during {tool}'s calls"
                        ));
                    }
                }
            }
        }
        out
    }
}

fn check_paths(list: &[String], field: &str, args: &[&str]) -> Result<(), Failed> {
    for (i, p) in list.iter().enumerate() {
        check_path(p, args).map_err(|e| (format!("{field}[{i}]"), p.clone(), e))?;
    }
    Ok(())
}

fn compile_exec(list: &[String], field: &str) -> Result<Vec<ExePattern>, Failed> {
    list.iter()
        .enumerate()
        .map(|(i, e)| ExePattern::parse(e).map_err(|err| (format!("{field}[{i}]"), e.clone(), err.into())))
        .collect()
}

fn compile_outbound(spec: &OutboundSpec, field: &str) -> Result<Outbound, Failed> {
    let mut hosts = Vec::new();
    for (i, h) in spec.allow_host.iter().enumerate() {
        hosts.push(HostPattern::parse(h).map_err(|e| (format!("{field}.allow_host[{i}]"), h.clone(), e.into()))?);
    }
    for (i, t) in spec.allow_transport.iter().enumerate() {
        if !matches!(t.to_ascii_lowercase().as_str(), "tcp" | "udp") {
            return Err((
                format!("{field}.allow_transport[{i}]"),
                t.clone(),
                EntryError::Transport(t.clone()),
            ));
        }
    }
    Ok(Outbound {
        all: spec.insecure_allow_all,
        hosts,
        ports: spec.allow_port.clone(),
        transports: spec.allow_transport.iter().map(|t| t.to_ascii_lowercase()).collect(),
    })
}

fn compile_inbound(spec: &InboundSpec, field: &str) -> Result<Vec<HostPattern>, Failed> {
    spec.allow_host
        .iter()
        .enumerate()
        .map(|(i, h)| HostPattern::parse(h).map_err(|e| (format!("{field}.allow_host[{i}]"), h.clone(), e.into())))
        .collect()
}

/// One tool's grants; errors name the tool (`tools.read_file.read[0]`).
fn compile_tool(tool: &str, spec: &ToolSpec, args: &[&str]) -> Result<ToolGrant, Failed> {
    let at = format!("tools.{tool}");
    if let Some(r) = &spec.read {
        check_paths(r, &format!("{at}.read"), args)?;
    }
    if let Some(w) = &spec.write {
        check_paths(w, &format!("{at}.write"), args)?;
    }
    let net = spec.network.as_ref();
    Ok(ToolGrant {
        read: spec.read.clone(),
        write: spec.write.clone(),
        outbound: net
            .and_then(|n| n.outbound.as_ref())
            .map(|o| compile_outbound(o, &format!("{at}.network.outbound")))
            .transpose()?,
        inbound: net
            .and_then(|n| n.inbound.as_ref())
            .map(|i| compile_inbound(i, &format!("{at}.network.inbound")))
            .transpose()?,
        exec: spec
            .exec
            .as_ref()
            .map(|e| compile_exec(e, &format!("{at}.exec")))
            .transpose()?,
    })
}

/// A pin as `mcpwatch pins show` prints it, hex in lowercase.
fn pin_hash(h: &str) -> Option<String> {
    let hex = h.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Whether path pattern `p` lies within one of `within`, both as written:
/// `~` and `${NAME}` stand for themselves, so `${roots}/docs/**` is within
/// `${roots}`. Wildcards of `p` are matched as text, which errs towards
/// "not within" (a warning, never a rejection).
fn path_within(p: &str, within: &[String]) -> bool {
    let probe = |s: &str| expand(s, "/@home@", &|n| vec![format!("/@arg@{n}")]);
    let globs: Vec<PathGlob> = within
        .iter()
        .flat_map(|w| probe(w))
        .filter_map(|w| PathGlob::new(&w).ok())
        .collect();
    within.iter().any(|w| w == p) || probe(p).iter().all(|p| globs.iter().any(|g| g.matches(p)))
}

/// How a tool's outbound grant goes beyond the server's: `(field suffix: what)`.
fn outbound_widening(tool: &Outbound, server: &Outbound) -> Vec<String> {
    if server.all {
        return Vec::new();
    }
    if tool.all {
        return vec![".insecure_allow_all: true while the server-wide grant is not".into()];
    }
    let mut out = Vec::new();
    if !server.transports.is_empty()
        && (tool.transports.is_empty() || tool.transports.iter().any(|t| !server.transports.contains(t)))
    {
        out.push(".allow_transport: allows transports the server-wide grant does not".into());
    }
    let ports_within = |tp: &[u16], sp: &[u16]| sp.is_empty() || (!tp.is_empty() && tp.iter().all(|p| sp.contains(p)));
    for (i, h) in tool.hosts.iter().enumerate() {
        let tp: Vec<u16> = h.port.map(|p| vec![p]).unwrap_or_else(|| tool.ports.clone());
        let covered = server.hosts.iter().any(|s| {
            let sp: Vec<u16> = s.port.map(|p| vec![p]).unwrap_or_else(|| server.ports.clone());
            s.host.covers(&h.host) && ports_within(&tp, &sp)
        });
        if !covered {
            out.push(format!(".allow_host[{i}]: not within the server-wide hosts and ports"));
        }
    }
    out
}

/// Checks a path pattern: `~`, `${arg}` references, glob syntax.
pub(super) fn check_path(p: &str, args: &[&str]) -> Result<(), EntryError> {
    let host = host_side(p);
    for r in arg_refs(host) {
        if let Some(name) = r.strip_prefix(super::env::PREFIX) {
            if !super::env::valid_name(name) {
                return Err(EntryError::UnknownArg(r));
            }
            continue;
        }
        if r != super::CLIENT_ROOTS && !args.contains(&r.as_str()) {
            return Err(EntryError::UnknownArg(r));
        }
    }
    let probe = expand(host, "/home/x", &|_| vec!["/arg".to_owned()]);
    for p in probe {
        PathGlob::new(&p)?;
    }
    Ok(())
}

/// ToolHive mount declarations may be `host:container`; the host side is what
/// a process on the host touches.
fn host_side(p: &str) -> &str {
    match p.split_once(':') {
        Some((h, c)) if c.starts_with('/') && !h.is_empty() => h,
        _ => p,
    }
}

/// Names referenced as `${NAME}`.
pub(super) fn arg_refs(p: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = p;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                out.push(after[..j].to_owned());
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Expands `~` (to `home`) and each `${NAME}` (to every value bound to it; a
/// pattern whose argument has no value yet expands to nothing).
pub fn expand(p: &str, home: &str, values: &dyn Fn(&str) -> Vec<String>) -> Vec<String> {
    let p = host_side(p);
    let p = if p == "~" {
        home.to_owned()
    } else if let Some(rest) = p.strip_prefix("~/") {
        format!("{}/{rest}", home.trim_end_matches('/'))
    } else {
        p.to_owned()
    };
    let mut out = vec![p];
    for r in arg_refs(&out[0].clone()) {
        let vals = values(&r);
        let key = format!("${{{r}}}");
        out = out
            .into_iter()
            .flat_map(|s| vals.iter().map(|v| s.replace(&key, v)).collect::<Vec<_>>())
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn tools_narrow_categories_and_omitted_ones_fall_back() {
        let m = parse(
            r#"{"args": {"roots": {"from": "server-filesystem"}},
                "read": ["${roots}"], "write": ["${roots}"], "exec": ["git"],
                "network": {"outbound": {"allow_host": [".github.com"], "allow_port": [443]}},
                "tools": {
                  "read_file": {"write": []},
                  "push": {"network": {"outbound": {"allow_host": ["api.github.com"], "allow_port": [443]}},
                           "exec": ["git"]},
                  "notes": {"read": ["${roots}/notes/**"], "write": ["${roots}/notes"]}
                }}"#,
        )
        .unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        let rf = &m.tools["read_file"];
        assert_eq!(rf.write.as_deref(), Some(&[][..]));
        assert!(rf.read.is_none() && rf.outbound.is_none() && rf.exec.is_none());
        let push = &m.tools["push"];
        assert_eq!(push.outbound.as_ref().unwrap().hosts.len(), 1);
        assert!(push.inbound.is_none(), "inbound falls back on its own");
        assert_eq!(push.exec.as_ref().unwrap().len(), 1);
        assert_eq!(
            m.tools["notes"].read.as_deref(),
            Some(&["${roots}/notes/**".to_owned()][..])
        );
    }

    #[test]
    fn tool_grants_wider_than_the_servers_load_with_warnings() {
        let m = parse(
            r#"{"read": ["/data"], "write": ["/data/out"], "exec": ["git"],
                "network": {"outbound": {"allow_host": [".github.com", "10.0.0.0/8"], "allow_port": [443]},
                            "inbound": {"allow_host": ["127.0.0.1"]}},
                "tools": {
                  "ok": {"read": ["/data/in/**"], "write": ["/data/out/*.txt"], "exec": ["/usr/bin/git"],
                         "network": {"outbound": {"allow_host": ["api.github.com", "10.1.0.0/16:443"],
                                                  "allow_port": [443]}}},
                  "wide": {"read": ["/etc"], "write": ["/data/in"], "exec": ["curl"],
                           "network": {"outbound": {"allow_host": ["example.com", "api.github.com:80"]},
                                       "inbound": {"allow_host": []}}},
                  "all": {"network": {"outbound": {"insecure_allow_all": true}}},
                  "leaky": {"read": ["/data/in"]},
                  "empty": {}
                }}"#,
        )
        .unwrap();
        let w = m.warnings.join("\n");
        assert!(!w.contains("tools.ok"), "{w}");
        for want in [
            "tools.wide.read[0]: \"/etc\" is not within the server-wide `read`/`write`",
            "tools.wide.write[0]: \"/data/in\" is not within the server-wide `write`",
            "tools.wide.exec[0]: \"curl\" is not within the server-wide `exec`",
            "tools.wide.network.outbound.allow_host[0]: not within",
            "tools.wide.network.outbound.allow_host[1]: not within",
            "tools.wide.network.inbound.allow_host: empty (any peer)",
            "tools.all.network.outbound.insecure_allow_all",
            "tools.leaky: `read` is narrowed but `write` is not",
            "tools.empty: narrows nothing",
        ] {
            assert!(w.contains(want), "missing {want:?} in:\n{w}");
        }
        assert_eq!(m.warnings.len(), 9, "{w}");
        // Arguments and ~ compare as written.
        let m = parse(
            r#"{"args": {"roots": {"from": "x"}}, "read": ["${roots}", "~/notes"],
                "tools": {"t": {"read": ["${roots}/a/**", "~/notes/*.md"], "write": []}}}"#,
        )
        .unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }

    /// Seen while writing `props`: a name pattern is expanded brace by brace
    /// at every exec (and when a tool's `exec` is compared at load), so
    /// `{a,b}` forty times hung the agent on 2^40 names. Over 1,024 is refused.
    #[test]
    fn a_name_pattern_spelling_too_many_names_is_refused() {
        let e = parse(&format!(r#"{{"exec": ["{}"]}}"#, "{a,b}".repeat(11))).unwrap_err();
        assert_eq!(e.field, "exec[0]", "{e}");
        assert!(e.what.contains("more than 1024 names"), "{e}");
        let bomb = "{a,b}".repeat(40);
        let e = parse(&format!(
            r#"{{"exec": ["git"], "tools": {{"t": {{"exec": ["{bomb}"]}}}}}}"#
        ))
        .unwrap_err();
        assert_eq!(e.field, "tools.t.exec[0]", "{e}");
        let m = parse(&format!(r#"{{"exec": ["{}"]}}"#, "{a,b}".repeat(10))).unwrap();
        assert!(m.exec[0].matches("/usr/bin/abababbbba"));
    }

    /// A pattern past the length cap is refused at its field before it is
    /// compiled (`policy/glob.rs` tests what the regex engine refuses).
    #[test]
    fn a_path_pattern_too_long_is_refused_at_its_field() {
        let e = parse(&format!(r#"{{"read": ["/ok", "/{}"]}}"#, "*a".repeat(10_000))).unwrap_err();
        assert_eq!(e.field, "read[1]", "{e}");
        assert!(e.what.contains("pattern of 20001 bytes (at most 4096)"), "{e}");
    }

    #[test]
    fn pins_are_validated_and_normalised() {
        let hex = "AB".repeat(32);
        let m = parse(&format!(
            r#"{{"pins": {{"add": "sha256:{hex}"}}, "tools": {{"add": {{"exec": []}}}}}}"#
        ))
        .unwrap();
        assert_eq!(m.pins.unwrap()["add"], format!("sha256:{}", hex.to_lowercase()));
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert!(parse("{}").unwrap().pins.is_none());
        assert_eq!(parse(r#"{"pins": {}}"#).unwrap().pins, Some(ExpectedPins::new()));
        for bad in [
            "sha256:abc",
            "md5:0123",
            &"0".repeat(64),
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            let e = parse(&format!("{{\n\"pins\": {{\"add\": \"{bad}\"}}}}")).unwrap_err();
            assert_eq!((e.field.as_str(), e.line), ("pins.add", 2), "{e}");
            assert!(e.what.contains("is not a tool pin"), "{e}");
        }
        let e = parse(r#"{"pins": {"add": 1}}"#).unwrap_err();
        assert_eq!(e.field, "pins.add", "{e}");
        let e = parse(r#"{"pins": {"": "x"}}"#).unwrap_err();
        assert!(e.what.contains("tool name"), "{e}");
        let m = parse(&format!(
            r#"{{"pins": {{"add": "sha256:{hex}"}}, "tools": {{"ad": {{"exec": []}}}}}}"#
        ))
        .unwrap();
        assert!(m.warnings[0].contains("`pins` has no tool \"ad\""), "{:?}", m.warnings);
    }
}
