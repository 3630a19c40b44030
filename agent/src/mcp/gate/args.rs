//! Argument rules per tool (`gate.tools.NAME.args` of a manifest): a
//! `tools/call` whose arguments break one is refused before it reaches the
//! server, the refusal naming the argument and the rule.
//!
//! The agent resolves the rules for one server (`~`, `${args}` and the
//! grants expanded into path patterns, the declared hosts into host
//! patterns) and hands them over in the [`GateSpec`](super::GateSpec); the
//! gate compiles them once per spec. A rule the gate cannot compile refuses
//! every value (the agent checked it at load: a mismatch fails closed).

use std::collections::{BTreeMap, HashMap};

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{
    glob::{GlobSet, PathGlob},
    net::{Host, HostPattern},
};

/// One argument's rule, resolved for a server: every constraint given must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ArgRule {
    /// Absolute path patterns the value (a path, or a list of paths) must fall within.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Host patterns (`example.com`, `.example.com`, `10.0.0.0/8`, `host:443`,
    /// `*`) the host of the value (a URL, or a list of URLs) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// The values allowed.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    /// A regular expression the whole value (a string) must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Largest value in bytes (a string's UTF-8 length, else its JSON text's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// Argument name -> its rule, for one tool.
pub type ToolArgs = BTreeMap<String, ArgRule>;

/// A broken rule: what the refusal and the audit say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub arg: String,
    /// `paths`, `hosts`, `enum`, `regex`, `max_bytes`.
    pub rule: &'static str,
    pub reason: String,
}

impl Violation {
    /// The audit's rule id: `args.<argument>.<rule>`.
    pub fn rule_id(&self) -> String {
        format!("args.{}.{}", self.arg, self.rule)
    }
}

/// The rules of every tool, compiled.
#[derive(Debug, Default)]
pub struct Rules {
    tools: HashMap<String, Vec<(String, Compiled)>>,
}

#[derive(Debug)]
struct Compiled {
    paths: Option<Result<(GlobSet, Vec<String>), String>>,
    hosts: Option<Result<Vec<HostPattern>, String>>,
    one_of: Option<Vec<Value>>,
    regex: Option<Result<Regex, String>>,
    max_bytes: Option<u64>,
}

impl Rules {
    pub fn new(tools: &BTreeMap<String, ToolArgs>) -> Self {
        let tools = tools
            .iter()
            .map(|(tool, args)| {
                let compiled = args.iter().map(|(a, r)| (a.clone(), Compiled::new(r))).collect();
                (tool.clone(), compiled)
            })
            .collect();
        Self { tools }
    }

    /// Checks a call's `arguments`; an argument absent is not checked (the
    /// server's schema says whether it is required).
    pub fn check(&self, tool: &str, arguments: Option<&Value>) -> Result<(), Violation> {
        let Some(rules) = self.tools.get(tool) else {
            return Ok(());
        };
        for (arg, rule) in rules {
            if let Some(v) = arguments.and_then(|a| a.get(arg)).filter(|v| !v.is_null()) {
                rule.check(v).map_err(|(rule, reason)| Violation {
                    arg: arg.clone(),
                    rule,
                    reason,
                })?;
            }
        }
        Ok(())
    }
}

type Broken = (&'static str, String);

impl Compiled {
    fn new(r: &ArgRule) -> Self {
        let paths = r.paths.as_ref().map(|ps| {
            let globs: Result<Vec<PathGlob>, String> =
                ps.iter().map(|p| PathGlob::new(p).map_err(|e| e.to_string())).collect();
            globs.map(|g| (GlobSet::new(&g), ps.clone()))
        });
        let hosts = r.hosts.as_ref().map(|hs| {
            hs.iter()
                .map(|h| HostPattern::parse(h).map_err(|e| e.to_string()))
                .collect()
        });
        let regex = r
            .regex
            .as_ref()
            .map(|re| Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string()));
        Self {
            paths,
            hosts,
            one_of: r.one_of.clone(),
            regex,
            max_bytes: r.max_bytes,
        }
    }

    fn check(&self, v: &Value) -> Result<(), Broken> {
        if let Some(max) = self.max_bytes {
            let size = match v {
                Value::String(s) => s.len(),
                v => serde_json::to_vec(v).map_or(usize::MAX, |b| b.len()),
            };
            if size as u64 > max {
                return Err(("max_bytes", format!("{size} bytes, more than {max}")));
            }
        }
        if let Some(allowed) = &self.one_of
            && !allowed.contains(v)
        {
            return Err(("enum", format!("{v} is not one of {}", Value::Array(allowed.clone()))));
        }
        if let Some(re) = &self.regex {
            let re = re
                .as_ref()
                .map_err(|e| ("regex", format!("the rule does not compile: {e}")))?;
            let s = v.as_str().ok_or(("regex", "not a string".to_owned()))?;
            if !re.is_match(s) {
                return Err(("regex", format!("{s:?} does not match {}", re.as_str())));
            }
        }
        if let Some(paths) = &self.paths {
            let (set, texts) = paths
                .as_ref()
                .map_err(|e| ("paths", format!("the rule does not compile: {e}")))?;
            for s in strings(v).ok_or(("paths", "not a path or a list of paths".to_owned()))? {
                let p = absolute(s);
                if !set.matches(&p) {
                    return Err(("paths", format!("{p} is not within {}", texts.join(", "))));
                }
            }
        }
        if let Some(hosts) = &self.hosts {
            let hosts = hosts
                .as_ref()
                .map_err(|e| ("hosts", format!("the rule does not compile: {e}")))?;
            for s in strings(v).ok_or(("hosts", "not a URL or a list of URLs".to_owned()))? {
                url_within(s, hosts).map_err(|why| ("hosts", why))?;
            }
        }
        Ok(())
    }
}

/// A string, or every item of an array of strings (`None`: anything else).
fn strings(v: &Value) -> Option<Vec<&str>> {
    match v {
        Value::String(s) => Some(vec![s]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// The path a server would open, as far as the gate can tell without
/// touching the file system: `~` is this user's home, a relative path is
/// taken from the working directory the server inherits, and `.` and `..`
/// are resolved lexically (symbolic links are the sandbox's and the
/// kernel watch's to judge: the gate would race the server on them).
pub fn absolute(p: &str) -> String {
    let home = || std::env::var("HOME").unwrap_or_default();
    let joined = if p == "~" {
        home()
    } else if let Some(rest) = p.strip_prefix("~/") {
        format!("{}/{rest}", home())
    } else if p.starts_with('/') {
        p.to_owned()
    } else {
        let cwd = std::env::current_dir().map(|d| d.to_string_lossy().into_owned());
        format!("{}/{p}", cwd.unwrap_or_default())
    };
    crate::pipeline::observe::normalize(&joined)
}

/// Whether a URL's host (and port, when the pattern names one) is declared.
fn url_within(s: &str, hosts: &[HostPattern]) -> Result<(), String> {
    let url = url::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    let host = url.host().ok_or_else(|| format!("{s:?} names no host"))?;
    let (addr, name) = match &host {
        url::Host::Domain(d) => (None, Some(*d)),
        url::Host::Ipv4(a) => (Some(std::net::IpAddr::V4(*a)), None),
        url::Host::Ipv6(a) => (Some(std::net::IpAddr::V6(*a)), None),
    };
    let port = url.port_or_known_default();
    let ok = hosts.iter().any(|h| {
        // `localhost` as a name stands for loopback, as in the kernel's judging.
        let by_name = matches!(h.host, Host::Localhost) && name.is_some_and(|n| n.eq_ignore_ascii_case("localhost"));
        (by_name || h.matches_host(addr.as_ref(), name)) && h.port.is_none_or(|p| Some(p) == port)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("host {host} of {s:?} is not a declared host"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules(tool: &str, arg: &str, rule: Value) -> Rules {
        let r: ArgRule = serde_json::from_value(rule).unwrap();
        Rules::new(&BTreeMap::from([(
            tool.to_owned(),
            BTreeMap::from([(arg.to_owned(), r)]),
        )]))
    }

    #[test]
    fn paths_must_fall_within_the_patterns_after_dots_are_resolved() {
        let r = rules("read", "path", json!({"paths": ["/srv/data", "/tmp/*.txt"]}));
        assert!(r.check("read", Some(&json!({"path": "/srv/data/a/b"}))).is_ok());
        assert!(r.check("read", Some(&json!({"path": "/tmp/x.txt"}))).is_ok());
        let v = r
            .check("read", Some(&json!({"path": "/srv/data/../../etc/passwd"})))
            .unwrap_err();
        assert_eq!((v.arg.as_str(), v.rule), ("path", "paths"));
        assert!(v.reason.contains("/etc/passwd is not within /srv/data"), "{v:?}");
        // Every item of a list; a number is not a path.
        assert!(
            r.check("read", Some(&json!({"path": ["/srv/data/a", "/etc/shadow"]})))
                .is_err()
        );
        assert!(r.check("read", Some(&json!({"path": 3}))).is_err());
        // Other tools and absent arguments are not this rule's.
        assert!(r.check("write", Some(&json!({"path": "/etc/passwd"}))).is_ok());
        assert!(r.check("read", Some(&json!({}))).is_ok());
        assert!(r.check("read", None).is_ok());
    }

    #[test]
    fn urls_must_name_a_declared_host_and_port() {
        let r = rules(
            "fetch",
            "url",
            json!({"hosts": [".example.com", "localhost:8080", "10.0.0.0/8"]}),
        );
        for ok in [
            "https://example.com/x",
            "http://api.example.com:81/",
            "http://localhost:8080/",
            "http://10.1.2.3/",
        ] {
            assert!(r.check("fetch", Some(&json!({"url": ok}))).is_ok(), "{ok}");
        }
        for bad in [
            "https://example.com.evil.org/",
            "http://localhost:9090/",
            "http://169.254.169.254/latest",
            "file:///etc/passwd",
            "not a url",
        ] {
            let v = r.check("fetch", Some(&json!({"url": bad}))).unwrap_err();
            assert_eq!(v.rule, "hosts", "{bad}: {v:?}");
        }
    }

    #[test]
    fn enums_regexes_and_sizes() {
        let r = rules("t", "mode", json!({"enum": ["r", "w"]}));
        assert!(r.check("t", Some(&json!({"mode": "r"}))).is_ok());
        assert_eq!(r.check("t", Some(&json!({"mode": "x"}))).unwrap_err().rule, "enum");
        // A regex matches the whole value.
        let r = rules("t", "name", json!({"regex": "[a-z]+"}));
        assert!(r.check("t", Some(&json!({"name": "abc"}))).is_ok());
        assert_eq!(
            r.check("t", Some(&json!({"name": "abc;rm"}))).unwrap_err().rule,
            "regex"
        );
        let r = rules("t", "body", json!({"max_bytes": 4}));
        assert!(r.check("t", Some(&json!({"body": "abcd"}))).is_ok());
        let v = r.check("t", Some(&json!({"body": "abcde"}))).unwrap_err();
        assert_eq!((v.rule, v.rule_id()), ("max_bytes", "args.body.max_bytes".to_owned()));
        assert_eq!(
            r.check("t", Some(&json!({"body": [1, 2, 3]}))).unwrap_err().rule,
            "max_bytes"
        );
    }

    #[test]
    fn a_rule_that_does_not_compile_refuses_every_value() {
        let r = rules("t", "name", json!({"regex": "("}));
        assert!(
            r.check("t", Some(&json!({"name": "a"})))
                .unwrap_err()
                .reason
                .contains("does not compile")
        );
        let r = rules("t", "path", json!({"paths": ["relative"]}));
        assert!(r.check("t", Some(&json!({"path": "/a"}))).is_err());
    }

    #[test]
    fn relative_and_home_paths_are_made_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(absolute("a/./b/../c"), format!("{}/a/c", cwd.display()));
        assert_eq!(absolute("/../../etc//passwd"), "/etc/passwd");
    }
}
