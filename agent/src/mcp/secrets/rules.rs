//! The secret rule catalogue: credentials recognisable by their shape, each
//! with an id, what it matches and what the gate does with it by default.
//!
//! No maintained Rust crate ships gitleaks-style rules (the crates that
//! exist bundle a scanner of files and git history, not a catalogue), so the
//! rules are ported from gitleaks' `config/gitleaks.toml` (MIT): each says
//! which gitleaks rule it comes from, and where it departs from it and why.
//! Precision over recall: a rule that fires on benign tool output is worse
//! than one that misses an odd token (docker/mcp-gateway#334).

use std::{
    ops::Range,
    sync::{LazyLock, OnceLock},
};

use aho_corasick::{AhoCorasick, AhoCorasickKind};

use super::{
    Action,
    matcher::{Compiled, Groups},
};

/// One rule. The secret is the highest-numbered capture group that took
/// part in the match (the whole match when the pattern has none).
pub struct SecretRule {
    pub id: &'static str,
    /// What it matches, in words (README, `approve`).
    pub what: &'static str,
    pub default: Action,
    /// Literals every match holds, one at least (ASCII case ignored): the
    /// rule's regex runs, and is compiled, only for a text holding one.
    anchors: &'static [&'static str],
    pattern: &'static str,
    /// How far a match reaches from the anchor it holds: it starts at most
    /// `.0` bytes before the anchor and ends at most `.1` bytes after it
    /// (beyond the longest secret of its kind; a longer one is cut there).
    reach: (usize, usize),
    /// Further test of a match (entropy, names, documentation examples).
    check: Option<fn(&Groups<'_>, &str) -> bool>,
}

/// Every rule, most specific first: when two rules match overlapping text
/// the earlier one names it.
pub static RULES: &[SecretRule] = &[
    // gitleaks `private-key`; an unterminated body of 64+ base64 characters
    // also counts (a result cut mid-key still leaks most of it).
    SecretRule {
        id: "private-key",
        what: "PEM and OpenSSH private key blocks (RSA, EC, DSA, OPENSSH, PKCS#8, encrypted)",
        default: Action::Redact,
        anchors: &["-----begin"],
        pattern: r"(?i)-----BEGIN[ A-Z0-9_-]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]{64,}?KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\]{64,})",
        reach: (0, 16 << 10),
        check: None,
    },
    // gitleaks `aws-access-token`, with its allowlist of documentation keys (`...EXAMPLE`).
    SecretRule {
        id: "aws-access-key-id",
        what: "AWS access key ids (AKIA, ASIA, ABIA, ACCA, A3T...)",
        default: Action::Redact,
        anchors: &["a3t", "akia", "asia", "abia", "acca"],
        pattern: r"\b((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b",
        reach: (0, 64),
        check: Some(|g, s| !g.bytes(0).unwrap_or_default().ends_with(b"EXAMPLE") && !s.is_empty()),
    },
    // Not in gitleaks' default set (its `generic-api-key` finds it): the
    // secret half of an AWS pair, by its names in the CLI's JSON output,
    // `~/.aws/credentials` and environment variables.
    SecretRule {
        id: "aws-secret-access-key",
        what: "AWS secret access keys: 40 characters after `aws_secret_access_key`, `SecretAccessKey`...",
        default: Action::Redact,
        anchors: &[
            "secretaccesskey",
            "secret_accesskey",
            "secretaccess_key",
            "secret_access_key",
        ],
        pattern: r#"(?i)(?:aws_?)?secret_?access_?key\\?["']?\s{0,5}[:=]\s{0,5}\\?["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        reach: (8, 128),
        check: Some(|_, s| entropy(s) >= 3.5),
    },
    // Not in gitleaks' default set: a Google service account key file's key
    // id (its private key is `private-key`'s).
    SecretRule {
        id: "gcp-service-account-key",
        what: "Google service account key files: the `private_key_id` of a `service_account` JSON key",
        default: Action::Redact,
        anchors: &["private_key_id"],
        pattern: r#"\\?"private_key_id\\?"\s*:\s*\\?"([a-f0-9]{40})\\?""#,
        reach: (4, 128),
        check: None,
    },
    // gitleaks `gcp-api-key`.
    SecretRule {
        id: "gcp-api-key",
        what: "Google API keys (AIza...)",
        default: Action::Redact,
        anchors: &["aiza"],
        pattern: r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
        reach: (0, 64),
        check: None,
    },
    // gitleaks `github-pat`, `github-oauth`, `github-app-token`, `github-refresh-token`.
    SecretRule {
        id: "github-token",
        what: "GitHub tokens: personal (ghp_), OAuth (gho_), app (ghu_, ghs_), refresh (ghr_)",
        default: Action::Redact,
        anchors: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        pattern: r"\b(gh[pousr]_[0-9a-zA-Z]{36})\b",
        reach: (0, 64),
        check: None,
    },
    // gitleaks `github-fine-grained-pat`.
    SecretRule {
        id: "github-fine-grained-pat",
        what: "GitHub fine-grained personal access tokens (github_pat_)",
        default: Action::Redact,
        anchors: &["github_pat_"],
        pattern: r"\b(github_pat_[0-9A-Za-z_]{82})\b",
        reach: (0, 128),
        check: None,
    },
    // gitleaks `gitlab-pat` (and its routable form), `gitlab-ptt`, `gitlab-rrt`, `gitlab-runner-authentication-token`.
    SecretRule {
        id: "gitlab-token",
        what: "GitLab tokens: personal (glpat-), pipeline trigger (glptt-), runner (glrt-, GR1348941)",
        default: Action::Redact,
        anchors: &["glpat-", "glptt-", "glrt-", "gr1348941"],
        pattern: r"\b(glpat-[0-9A-Za-z_-]{20,}(?:\.[0-9a-z]{2,12})?|glptt-[0-9a-f]{40}|glrt-[0-9A-Za-z_-]{20,}|GR1348941[0-9A-Za-z_-]{20})",
        reach: (0, 256),
        check: None,
    },
    // gitleaks `slack-bot-token`, `slack-user-token`, `slack-app-token`, `slack-legacy-*`.
    SecretRule {
        id: "slack-token",
        what: "Slack tokens: bot (xoxb-), user (xoxp-, xoxe-), app (xapp-), legacy (xoxa-, xoxo-, xoxs-, xoxr-)",
        default: Action::Redact,
        anchors: &["xox", "xapp-"],
        pattern: r"\b(xoxb-[0-9]{10,13}-[0-9]{10,13}[a-zA-Z0-9-]*|xox[pe](?:-[0-9]{10,13}){3}-[a-zA-Z0-9-]{28,34}|(?i:xapp)-\d-[A-Z0-9]+-\d+-[a-z0-9]+|xox[aors]-\d+-[0-9a-zA-Z-]{8,})",
        reach: (0, 256),
        check: None,
    },
    // gitleaks `slack-webhook-url`.
    SecretRule {
        id: "slack-webhook",
        what: "Slack incoming webhook URLs",
        default: Action::Redact,
        anchors: &["hooks.slack.com/"],
        pattern: r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9+/]{43,56})",
        reach: (8, 128),
        check: None,
    },
    // gitleaks `npm-access-token`.
    SecretRule {
        id: "npm-token",
        what: "npm access tokens (npm_)",
        default: Action::Redact,
        anchors: &["npm_"],
        pattern: r"(?i)\b(npm_[a-z0-9]{36})\b",
        reach: (0, 64),
        check: None,
    },
    // gitleaks `pypi-upload-token`.
    SecretRule {
        id: "pypi-token",
        what: "PyPI upload tokens (pypi-AgEIcHlwaS5vcmc...)",
        default: Action::Redact,
        anchors: &["pypi-ageichlwas5vcmc"],
        pattern: r"\b(pypi-AgEIcHlwaS5vcmc[0-9A-Za-z_-]{50,})",
        reach: (0, 1024),
        check: None,
    },
    // gitleaks `anthropic-api-key` (and admin keys), `openai-api-key`.
    SecretRule {
        id: "llm-api-key",
        what: "Anthropic (sk-ant-api03-, sk-ant-admin01-) and OpenAI (sk-...T3BlbkFJ...) API keys",
        default: Action::Redact,
        anchors: &["sk-ant-", "t3blbkfj"],
        pattern: r"\b(sk-ant-(?:api03|admin01)-[a-zA-Z0-9_-]{93}AA|sk-(?:(?:proj|svcacct|admin)-)?[A-Za-z0-9_-]{20,74}T3BlbkFJ[A-Za-z0-9_-]{20,74})\b",
        reach: (128, 256),
        check: None,
    },
    // gitleaks `jwt`.
    SecretRule {
        id: "jwt",
        what: "JSON Web Tokens (header.payload.signature, base64url)",
        default: Action::Redact,
        anchors: &[".ey"],
        pattern: r#"\b(ey[a-zA-Z0-9]{17,}\.ey[a-zA-Z0-9/\\_-]{17,}\.(?:[a-zA-Z0-9/\\_-]{10,}={0,2})?)(?:['"\s`;]|$)"#,
        reach: (1024, 8 << 10),
        check: None,
    },
    // Not a gitleaks rule (its `generic-api-key` covers some): a `.env` or
    // shell line assigning a credential-named variable a literal value.
    SecretRule {
        id: "dotenv-credential",
        what: "`.env` and shell assignments `NAME=value` where NAME names a credential (PASSWORD, SECRET, TOKEN, API_KEY...) and the value is a literal of 8+ characters",
        default: Action::Redact,
        anchors: &["pass", "pwd", "secret", "token", "auth", "cred", "key"],
        pattern: r#"(?m)^[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*(?:"([^"\n]{8,})"|'([^'\n]{8,})'|([^\s#'"]{8,}))"#,
        reach: WORDS,
        check: Some(|c, s| s.len() <= 200 && credential_name(group(c, 1)) && literal(s) && entropy(s) >= 3.0),
    },
    // gitleaks `generic-api-key`: a credential keyword, an assignment, and a
    // high-entropy value. Alerted only by default: it is the rule most
    // likely to meet a benign value.
    SecretRule {
        id: "generic-api-key",
        what: "a value of 16+ characters with high entropy (3.5 bits/char), letters and digits, assigned to a name holding a credential keyword (key, secret, token, password, auth, credential)",
        default: Action::Alert,
        anchors: &["access", "auth", "api", "cred", "key", "passw", "secret", "token"],
        pattern: r#"(?i)\b([0-9A-Za-z_.-]{0,40}?(?:access|auth|api|credential|creds|key|passw(?:or)?d|secret|token)[0-9A-Za-z_.-]{0,20})\\?[\s'"]{0,3}(?:=|>|:{1,3}=|\|\||:|=>|\?=|,)[\x60'"\s=\\]{0,5}([0-9A-Za-z_.=+/-]{16,})(?:[\x60'"\s;\\,]|$)"#,
        reach: WORDS,
        check: Some(|c, s| {
            s.len() <= 150
                && credential_name(group(c, 1))
                && entropy(s) >= 3.5
                && s.bytes().any(|b| b.is_ascii_digit())
                && s.bytes().any(|b| b.is_ascii_alphabetic())
        }),
    },
];

/// The reach of the rules whose anchors are common words (`key`, `token`):
/// they meet benign text everywhere, and search it with a lazy DFA.
const WORDS: (usize, usize) = (256, 512);

/// Each rule's automaton, compiled the first time a text holds one of its
/// anchors: a gate holds the NFAs of the rules its traffic came near (2–20
/// KiB each; see `matcher`). ASCII only (`(?-u)`, over bytes): credentials
/// are ASCII, and Unicode classes and case folding multiply the automata's
/// size.
static COMPILED: LazyLock<Vec<OnceLock<Compiled>>> = LazyLock::new(|| RULES.iter().map(|_| OnceLock::new()).collect());

/// Every rule's anchors in one automaton (ASCII case ignored), with the rule
/// each belongs to. A contiguous NFA: 15 KiB against the DFA's 106 KiB, for
/// 2.0 µs per KB of text against 1.6.
static ANCHORS: LazyLock<(AhoCorasick, Vec<usize>)> = LazyLock::new(|| {
    let (words, owners): (Vec<&str>, Vec<usize>) = RULES
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.anchors.iter().map(move |a| (*a, i)))
        .unzip();
    let ac = AhoCorasick::builder()
        .ascii_case_insensitive(true)
        .kind(Some(AhoCorasickKind::ContiguousNFA))
        .build(words)
        .expect("secret rule anchors");
    (ac, owners)
});

/// Where in a text one rule may match: the windows around its anchors, or,
/// for a rule whose matches begin with their anchor, the windows from each
/// anchor on (in order of their start, overlapping).
pub struct Near {
    windows: Vec<Range<usize>>,
    at_anchor: bool,
}

/// The rules whose anchors `text` holds, in catalogue order, each with the
/// windows of the text its matches can lie in.
pub fn candidates(text: &str) -> impl Iterator<Item = (&'static SecretRule, Near)> {
    let (ac, owners) = &*ANCHORS;
    let mut near: Vec<Vec<Range<usize>>> = RULES.iter().map(|_| Vec::new()).collect();
    for m in ac.find_overlapping_iter(text) {
        let i = owners[m.pattern().as_usize()];
        let (before, after) = RULES[i].reach;
        let mut start = m.start().saturating_sub(before);
        let mut end = m.end().saturating_add(after).min(text.len());
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let windows = &mut near[i];
        match windows.last_mut() {
            // Hits come in order of their end: a window only grows or follows.
            Some(last) if before > 0 && start <= last.end => {
                last.start = last.start.min(start);
                last.end = last.end.max(end);
            }
            _ => windows.push(start..end),
        }
    }
    RULES
        .iter()
        .zip(near)
        .filter(|(_, windows)| !windows.is_empty())
        .map(|(rule, mut windows)| {
            let at_anchor = rule.reach.0 == 0;
            if at_anchor {
                windows.sort_by_key(|w| w.start);
            }
            (rule, Near { windows, at_anchor })
        })
}

impl SecretRule {
    /// The secrets this rule finds in `text` near its anchors: each
    /// secret's byte range (compiling the rule the first time).
    pub fn secrets(&'static self, text: &str, near: &Near) -> Vec<Range<usize>> {
        let i = RULES
            .iter()
            .position(|r| std::ptr::eq(r, self))
            .expect("a rule of RULES");
        let compiled =
            COMPILED[i].get_or_init(|| Compiled::new(self.pattern, self.reach == WORDS).expect("secret rule"));
        let mut found = Vec::new();
        compiled.each_match(text.as_bytes(), &near.windows, near.at_anchor, |g| {
            found.extend(self.secret(g))
        });
        found
    }

    /// The secret's byte range in the text, if the match is one.
    fn secret(&self, g: &Groups<'_>) -> Option<Range<usize>> {
        let i = (1..g.len()).rev().find(|&i| g.range(i).is_some()).unwrap_or(0);
        // Every class of the rules is ASCII but `[\s\S]` and `[^"\n]`,
        // which end at an ASCII byte: a match is whole characters.
        let found = std::str::from_utf8(g.bytes(i)?).ok()?;
        if let Some(check) = self.check
            && !check(g, found)
        {
            return None;
        }
        g.range(i)
    }
}

/// A capture group's text ("" if it is not UTF-8: then no name matches).
fn group<'t>(g: &Groups<'t>, i: usize) -> &'t str {
    g.bytes(i).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

/// The rule of an id.
pub fn rule(id: &str) -> Option<&'static SecretRule> {
    RULES.iter().find(|r| r.id == id)
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Names a credential (`DB_PASSWORD`, `apiKey`, `client_secret`,
/// `GITHUB_TOKEN`), not a setting about one (`max_tokens`, `TOKEN_URL`,
/// `password_min_length`, `key_file`, `nextPageToken`): judged by its words
/// (split at `_`, `-`, `.` and camelCase), lower case.
pub fn credential_name(name: &str) -> bool {
    const CREDENTIAL: &[&str] = &[
        "password",
        "passwd",
        "pass",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "auth",
        "credential",
        "credentials",
        "creds",
        "apikey",
        "accesskey",
        "privatekey",
    ];
    // Words before `key` that make it a credential (`cache_key` is not).
    const KEY_OF: &[&str] = &[
        "api",
        "access",
        "private",
        "secret",
        "signing",
        "client",
        "master",
        "encryption",
        "auth",
        "license",
    ];
    const SETTING: &[&str] = &[
        "url",
        "uri",
        "endpoint",
        "host",
        "file",
        "path",
        "dir",
        "len",
        "length",
        "size",
        "count",
        "max",
        "min",
        "limit",
        "ttl",
        "timeout",
        "expiry",
        "expires",
        "expiration",
        "type",
        "kind",
        "name",
        "id",
        "hash",
        "sha",
        "digest",
        "etag",
        "checksum",
        "version",
        "cursor",
        "page",
        "next",
        "prev",
        "format",
        "mode",
        "enabled",
        "required",
        "policy",
        "header",
        "field",
        "param",
        "env",
        "var",
        "ref",
        "usage",
        "budget",
        "hint",
        "prompt",
        "reset",
        "rotate",
        "method",
        "scheme",
        "provider",
        "store",
        "manager",
    ];
    let words = words(name);
    let credential = words.iter().enumerate().any(|(i, w)| {
        CREDENTIAL.contains(&w.as_str()) || (w == "key" && i > 0 && KEY_OF.contains(&words[i - 1].as_str()))
    });
    credential && !words.iter().any(|w| SETTING.contains(&w.as_str()))
}

/// The words of an identifier, lower case: `nextPageToken` -> next, page, token.
fn words(name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A literal, not a reference to one (`${VAR}`, `$VAR`, `<your-key>`,
/// `{{ secret }}`, `changeme`, `********`).
fn literal(v: &str) -> bool {
    let first = v.as_bytes()[0];
    !matches!(first, b'$' | b'<' | b'{' | b'%')
        && !v.bytes().all(|b| b == v.as_bytes()[0])
        && ![
            "changeme",
            "password",
            "your_",
            "your-",
            "example",
            "placeholder",
            "xxxxxxxx",
        ]
        .iter()
        .any(|p| v.to_ascii_lowercase().contains(p))
}
