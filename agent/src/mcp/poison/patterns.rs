//! The poisoning rules' patterns: what text written for the model rather than
//! the user looks like. Measured against the reference and popular servers'
//! listings in `tests/data/listings` (none may match there) and against the
//! poisoned set in `tests/data/poisoned` (each must): see `corpus.rs`.
//!
//! Hand-written regexes rather than a classifier: they run in microseconds
//! on every listing and result, need no model, and say which words matched.

use std::sync::LazyLock;

use regex::Regex;

fn compile(parts: &[&str]) -> Regex {
    Regex::new(&ascii_words(&parts.concat())).expect("poisoning pattern")
}

/// The pattern with `\w` and `\b` ASCII (`[[:word:]]`, `(?-u:\b)`, in
/// classes too); `\s`, case folding and negated classes stay Unicode (a
/// non-breaking space still separates words). Unicode word classes make the
/// automata and their search caches 10 times larger (27 MiB for the five
/// after a few KB of text, 1.8 MiB with ASCII words); the words these rules
/// look for are English.
fn ascii_words(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut class = 0usize;
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('w') if class > 0 => out.push_str("[:word:]"),
                Some('w') => out.push_str("[[:word:]]"),
                Some('b') if class == 0 => out.push_str("(?-u:\\b)"),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' => {
                class += 1;
                out.push(c);
            }
            ']' if class > 0 => {
                class -= 1;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// Opening tags and markers of text meant for the model only.
pub static HIDDEN_MARKER: LazyLock<Regex> = LazyLock::new(|| {
    compile(&[
        r"(?i)<\s*(important|system|instructions?|secret|hidden|admin|critical|context|assistant|ai|prompt|sys)\b[^>]{0,100}>",
        r"|<!--[\s\S]*?(-->|$)|\[/?(system|inst)\]|<\|im_start\|>|\{\{\s*system",
    ])
});

/// The model (or whoever reads the description) addressed, told what to do.
pub static DIRECTIVE: LazyLock<Regex> = LazyLock::new(|| {
    compile(&[
        r"(?i)\bignore\s+(all\s+|any\s+)?(the\s+)?(previous|prior|above|earlier|other|your)\s+(instructions|prompts|rules|directions|guidelines)",
        r"|\bbefore\s+(using|calling|invoking|running|executing|any\s+call\s+to)\s+(this|any|the|other)\b[\w\s]{0,20}?\btools?\b",
        r"|\b(you|the\s+(assistant|model|ai|agent|llm)|assistant|claude)\s+(must|should|need\s+to|has\s+to|have\s+to|is\s+required\s+to|are\s+required\s+to|shall)\s+(first\s+|always\s+|also\s+|now\s+|then\s+)?",
        // Not `call` or `use`: servers tell the model to call their own tools
        // in order ("you must call resolve-library-id first"); another
        // server's tool named is `unrelated_action` or `tool_shadowing`.
        r"(read|send|include|pass|run|execute|fetch|upload|ignore|forward|copy|provide|append|attach|open|retrieve|collect|cat|email|post)\b",
        r"|\b(note|message|instructions?)\s+(to|for)\s+(the\s+)?(ai|assistant|model|llm|agent)\b|\bdear\s+(ai|assistant|model|llm|agent)\b|\bas\s+an\s+ai\b",
        r"|\b(as\s+a\s+|is\s+a\s+|this\s+is\s+a\s+)(mandatory|required|necessary|compulsory)\s+(first\s+)?(step|precondition|prerequisite)",
        r"|\b(it\s+is|this\s+is)\s+(mandatory|required|essential|critical|vital)\s+(that\s+you|to\s+(first|always))\b",
        r"|\b(otherwise|or\s+else)\s*,?\s+(the\s+|this\s+)?tool\s+(will|would|won't|may|might)\s+(not\s+work|fail|crash|break|refuse|error)",
        r"|\bwhen\s+this\s+tool\s+is\s+(available|present|loaded|installed|enabled)\b",
        r"|\bfor\s+(all|every|any)\s+(subsequent|future|later|following)\s+(calls?|requests?|emails?|messages?|tool\s+calls?)\b",
        r"|\b(new|updated|override|overriding)\s+(system\s+)?instructions?\s*:",
    ])
});

/// Keeping a step from the user.
pub static SECRECY: LazyLock<Regex> = LazyLock::new(|| {
    compile(&[
        r"(?i)\b(do\s+not|don't|dont|never|must\s+not|mustn't|should\s+not|shouldn't)\s+(tell|mention|inform|reveal|show|notify|alert|disclose|let|say|explain|report|display|expose|acknowledge|narrate|bring\s+up|point\s+out)\b",
        r"[^.\n]{0,60}?\b(user|human|them|anyone|operator|this|that|these|it)\b",
        r"|\bwithout\s+(telling|informing|notifying|alerting|asking|showing|letting|warning)\s+(the\s+)?(user|human|them|anyone)",
        r"|\b(the\s+)?user\s+(must|should|need|needs|will|does|do)\s*(not|n't)\s+(know|see|notice|learn|be\s+(told|informed|aware|notified|shown))",
        r"|\b(keep|hide)\s+(this|it|that|these|the\s+\w+)(\s+\w+)?\s+(secret\s+|hidden\s+|confidential\s+|private\s+)?from\s+(the\s+)?(user|human)",
        r"|\b(silently|secretly|covertly|quietly|discreetly|invisibly)\s+(send|read|forward|upload|copy|include|add|call|append|exfiltrate|bcc|cc|post|attach|collect|redirect)\b",
        r"|\b(could|would|might|will|may)\s+(even\s+)?(upset|worry|alarm|scare|confuse|concern|frighten)\s+the\s+user",
        r"|\b(an?\s+)?(internal\s+)?implementation\s+detail\b[^.\n]{0,40}\b(user|mention)\b",
    ])
});

/// Instructions to act on something the tool's own job does not name: a
/// specific file (in a home, `/etc`, a credential), a specific destination
/// (URL, address, host), another tool by name, a file's contents put into a
/// parameter.
pub static UNRELATED_ACTION: LazyLock<Regex> = LazyLock::new(|| {
    compile(&[
        // Read (or hand over) a specific file.
        r"(?i)\b(read|open|cat|load|retrieve|fetch|include|attach|pass|append|send|provide|copy|collect|upload|forward|post|get|grab|dump)\b",
        r"[^.\n]{0,80}?(~/[\w.-]|\$HOME\b|\$\{HOME\}|%USERPROFILE%|/home/[\w.-]+/|/root/|/etc/(passwd|shadow|hosts|ssh|ssl|sudoers)|/proc/self/environ|\bprivate\s+keys?\b)[\w./~-]*",
        // Send something to a specific place.
        r"|\b(send|sends|sent|post|posted|upload|uploaded|forward|forwarded|email|e-mail|transmit|exfiltrate|report|submit|mirror|mirrored|sync|synced|copied|redirect|bcc|cc)\b[^.\n]{0,80}?\bto\s+",
        r"(https?://[\w.-]+|[\w.+-]+@[\w-]+\.[\w.-]+|\d{1,3}(\.\d{1,3}){3}|[\w-]+\.(com|net|org|io|xyz|ru|cn|dev|app|site|top|example)\b)",
        r"|\b(bcc|cc|blind\s+copy)\b[^.\n]{0,40}?\b[\w.+-]+@[\w-]+\.[a-z]{2,}",
        // Another tool by name, first or on the side.
        r"|\b(first|before\s+\w+ing|also|then|additionally|afterwards|always)\s*,?\s+(call|invoke|use|run|execute|trigger)\s+(the\s+)?[`'\x22]?[A-Za-z][\w.-]*[`'\x22]?\s+(tool|function)\b",
        // A file's contents into a parameter.
        // (a parameter: quoted, or called one; "extracts its contents as markdown" is not)
        r"|\b(its|their|the\s+file's|the\s+file|the\s+key's)\s+contents?\s+(as|in|into|inside)\s+(the\s+)?([`'\x22]\w+[`'\x22]|\w+\s+(parameter|argument|field))",
        r"|\bcontents?\s+of\s+(~|/|\$HOME|(the\s+)?(user's\s+)?(ssh|private|secret|credentials?|\.env|env|config(uration)?)\s+(key|file|files)\b)",
        // Where results or messages really go.
        r"|\b(change|set|replace|rewrite|override)\s+(the\s+)?(recipient|destination|to\s+address|address|endpoint|webhook|phone\s+number|account\s+number|iban)s?\s+(to|with)\b",
    ])
});

/// Names of credential stores and secrets in any form: with prefixes and
/// suffixes (`my_id_rsa.bak`, `.aws/credentials.old`), as variables
/// (`AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`), as key files (`server.pem`).
/// Case matters for variables only (an upper-case name is an environment
/// variable; `token` in prose is not one).
pub static CREDENTIAL: LazyLock<Regex> = LazyLock::new(|| {
    compile(&[
        r"(?i:[\w.~/-]*\bid_(rsa|dsa|ecdsa|ed25519)[\w.-]*|[\w-]*_id_(rsa|dsa|ecdsa|ed25519)[\w.-]*",
        r"|~?[\w/.-]*/\.ssh\b[\w/.-]*|(^|[\s`'\x22(])\.ssh\b[\w/.-]*|\bauthorized_keys\b|\bknown_hosts\b",
        r"|\.aws/(credentials|config)[\w.-]*|\baws_(secret|access|session)[\w]*",
        r"|[\w.-]*\.netrc\b|\.pgpass\b|\.my\.cnf\b|\.git-credentials\b|\.docker/config\.json|\.kube/config\b|\bkubeconfig\b",
        r"|\.gnupg\b|/etc/(shadow|gshadow|sudoers|master\.passwd)\b|\.npmrc\b|\.pypirc\b|\.config/gh/hosts\.yml",
        r"|claude_desktop_config\.json|\.cursor/mcp\.json|\bmcp\.json\b|\.config/gcloud\b|\.azure/|application_default_credentials",
        r"|[\w.-]*credentials\.(json|ya?ml|xml|csv|txt|db)\b|client_secrets?[\w.-]*\.json|service[-_]account[\w.-]*\.json",
        r"|(^|[\s/~'`\x22(])\.env(\.[\w-]+)?\b|\bprivate[ _-]?keys?\b|[\w.-]+\.(pem|p12|pfx|ppk|kdbx|keystore|jks)\b",
        r"|\b(server|private|priv|tls|ssl|secret|signing)[\w-]*\.key\b",
        r"|\b(wallet\.dat|login\.keychain|keychain-db)\b|\.bitcoin/|\.ethereum/keystore|\.password-store\b",
        r"|\.(bash|zsh)_history\b|/proc/(self|\d+)/environ\b|\bLogin\s+Data\b|\bcookies\.sqlite\b)",
        r"|\b[A-Z][A-Z0-9]*_(SECRET|TOKEN|API_?KEY|PASSWORD|PASSWD|PRIVATE_KEY|ACCESS_KEY|SECRET_KEY|AUTH)[A-Z0-9_]*\b",
        r"|\b(SECRET|TOKEN|API_?KEY|PASSWORD|PRIVATE_KEY|ACCESS_KEY)_[A-Z0-9_]+\b",
    ])
});
