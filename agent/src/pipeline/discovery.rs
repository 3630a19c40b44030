//! Discovery rules: `--watch NAME=PATTERN` finds servers started without the
//! wrapper, at every exec and in the start-up scan of /proc.

use std::str::FromStr;

use regex::Regex;

use crate::pipeline::servers::{NameError, validate_name};

/// Watch processes whose exe or argv matches `pattern` as server `server`.
#[derive(Clone, Debug)]
pub struct WatchRule {
    pub server: String,
    pub pattern: Regex,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("watch rule {0:?} is not NAME=PATTERN")]
    Syntax(String),
    #[error("watch rule {rule:?}: {source}")]
    Name {
        rule: String,
        #[source]
        source: NameError,
    },
    #[error("watch rule {rule:?}: bad pattern: {source}")]
    Pattern {
        rule: String,
        #[source]
        source: regex::Error,
    },
}

impl FromStr for WatchRule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pat) = s.split_once('=').ok_or_else(|| RuleError::Syntax(s.to_owned()))?;
        if pat.is_empty() {
            return Err(RuleError::Syntax(s.to_owned()));
        }
        validate_name(name).map_err(|source| RuleError::Name {
            rule: s.to_owned(),
            source,
        })?;
        let pattern = Regex::new(pat).map_err(|source| RuleError::Pattern {
            rule: s.to_owned(),
            source,
        })?;
        Ok(Self {
            server: name.to_owned(),
            pattern,
        })
    }
}

/// The rule set, first match wins.
#[derive(Clone, Debug, Default)]
pub struct Rules(pub Vec<WatchRule>);

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The server a process belongs to: a rule's pattern found in the exe path
    /// or in the arguments joined by spaces.
    pub fn matches(&self, exe: &str, argv: &[String]) -> Option<&str> {
        if self.0.is_empty() {
            return None;
        }
        let joined = argv.join(" ");
        self.0
            .iter()
            .find(|r| r.pattern.is_match(exe) || r.pattern.is_match(&joined))
            .map(|r| r.server.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match() {
        let r: WatchRule = "fs=server-filesystem".parse().unwrap();
        let rules = Rules(vec![r, "py=^/usr/bin/python3".parse().unwrap()]);
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            rules.matches("/usr/bin/node", &argv(&["node", "/x/server-filesystem/dist/index.js"])),
            Some("fs")
        );
        assert_eq!(
            rules.matches("/usr/bin/python3", &argv(&["python3", "-m", "x"])),
            Some("py")
        );
        assert_eq!(rules.matches("/bin/ls", &argv(&["ls"])), None);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        assert!(matches!("noequals".parse::<WatchRule>(), Err(RuleError::Syntax(_))));
        assert!(matches!("a b=x".parse::<WatchRule>(), Err(RuleError::Name { .. })));
        assert!(matches!("a=(".parse::<WatchRule>(), Err(RuleError::Pattern { .. })));
    }
}
