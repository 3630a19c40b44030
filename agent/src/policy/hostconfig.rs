//! MCP host configurations users already have: Claude Desktop
//! (`claude_desktop_config.json`), VS Code (`mcp.json` in user and workspace
//! settings, `mcp.servers` in `settings.json`), Cursor (`~/.cursor/mcp.json`).
//! Each stdio server becomes a discovery rule: its command and arguments,
//! under the name the host gives it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::manifest::basename;

/// One server of a host configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostServer {
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    /// Already wrapped by `mcpwatch exec --server NAME`: the wrapper registers it.
    pub wrapped: bool,
    pub source: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HostConfigError {
    #[error(transparent)]
    Read(#[from] crate::untrusted::UntrustedError),
    #[error("{}:{line}:{column}: not JSON: {what}", file.display())]
    Json {
        file: PathBuf,
        line: usize,
        column: usize,
        what: String,
    },
    #[error("{}: {count} servers (at most {cap} per host configuration): refused", file.display())]
    TooManyServers { file: PathBuf, count: usize, cap: usize },
}

/// Servers one host configuration may declare (each becomes a discovery
/// rule every exec is matched against; hosts list a few dozen).
pub const MAX_SERVERS: usize = 256;

/// The host configuration files of one home directory.
pub fn user_files(home: &Path) -> Vec<PathBuf> {
    [
        ".config/Claude/claude_desktop_config.json",
        ".config/Code/User/mcp.json",
        ".config/Code/User/settings.json",
        ".config/Code - Insiders/User/mcp.json",
        ".config/Code - Insiders/User/settings.json",
        ".config/VSCodium/User/mcp.json",
        ".vscode-server/data/User/mcp.json",
        ".cursor/mcp.json",
    ]
    .iter()
    .map(|p| home.join(p))
    .collect()
}

/// Files of a workspace directory (VS Code and Cursor project settings).
pub fn workspace_files(dir: &Path) -> Vec<PathBuf> {
    [".vscode/mcp.json", ".vscode/settings.json", ".cursor/mcp.json"]
        .iter()
        .map(|p| dir.join(p))
        .collect()
}

/// Home directories of root and of every regular user.
pub fn homes() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            let dir = f.get(5)?;
            (uid == 0 || (1000..60000).contains(&uid)).then(|| PathBuf::from(dir))
        })
        .filter(|d| d.is_dir())
        .collect()
}

/// `--host-config PATH`: a file, or a workspace directory.
pub fn expand_arg(p: &Path) -> Vec<PathBuf> {
    if p.is_dir() {
        workspace_files(p)
    } else {
        vec![p.to_owned()]
    }
}

/// Parses one file (JSON with comments and trailing commas, as VS Code writes).
pub fn parse_file(file: &Path) -> Result<Vec<HostServer>, HostConfigError> {
    // Any user can plant these (a FIFO, a huge file): read them bounded.
    let text = crate::untrusted::read_text(file, crate::untrusted::HOST_CONFIG_MAX_BYTES)?;
    parse(file, &text)
}

pub fn parse(file: &Path, text: &str) -> Result<Vec<HostServer>, HostConfigError> {
    let v: Value = serde_json::from_str(&strip_jsonc(text)).map_err(|e| HostConfigError::Json {
        file: file.to_owned(),
        line: e.line(),
        column: e.column(),
        what: e.to_string(),
    })?;
    // Claude Desktop and Cursor: mcpServers; VS Code mcp.json: servers;
    // VS Code settings.json: mcp.servers.
    let table = v
        .get("mcpServers")
        .or_else(|| v.get("servers"))
        .or_else(|| v.get("mcp").and_then(|m| m.get("servers")))
        .and_then(Value::as_object);
    let Some(table) = table else {
        return Ok(Vec::new());
    };
    if table.len() > MAX_SERVERS {
        return Err(HostConfigError::TooManyServers {
            file: file.to_owned(),
            count: table.len(),
            cap: MAX_SERVERS,
        });
    }
    let mut out = Vec::new();
    for (name, s) in table {
        let Some(command) = s.get("command").and_then(Value::as_str) else {
            continue; // remote (url) servers run elsewhere
        };
        let args: Vec<String> = s
            .get("args")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let (name, wrapped) = match wrapped_name(command, &args) {
            Some(n) => (n, true),
            None => (sanitize(name), false),
        };
        out.push(HostServer {
            name,
            command: command.to_owned(),
            args,
            wrapped,
            source: file.to_owned(),
        });
    }
    Ok(out)
}

/// `mcpwatch exec --server NAME -- ...`: the name the wrapper registers.
fn wrapped_name(command: &str, args: &[String]) -> Option<String> {
    if basename(command) != "mcpwatch" || args.first().map(String::as_str) != Some("exec") {
        return None;
    }
    let i = args.iter().position(|a| a == "--server")?;
    args.get(i + 1).cloned()
}

/// Host configurations allow any key; server names allow `[A-Za-z0-9._@/:+-]`.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@/:+-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if s.is_empty() { "unnamed".into() } else { s }
}

impl HostServer {
    /// Whether a process is this server being started: a program of its
    /// launch chain naming the command (`npx`, or `/usr/bin/npx` run by
    /// node), followed by exactly the configured arguments (never a wrapper
    /// such as `timeout 30 npx …` that carries them).
    pub fn matches(&self, exe: &str, argv: &[String]) -> bool {
        if self.wrapped {
            return false;
        }
        let cmd = basename(&self.command);
        let names_cmd = |a: &str| a == self.command || basename(a) == cmd;
        let chain = crate::pipeline::launch::Launch::of(exe, argv).chain;
        chain
            .iter()
            .any(|&i| names_cmd(&argv[i]) && argv[i + 1..] == self.args[..])
            || (basename(exe) == cmd && argv.get(1..).is_some_and(|rest| rest == self.args.as_slice()))
    }
}

/// Removes `//` and `/* */` comments and trailing commas outside strings.
/// Works on bytes and copies everything else byte for byte: what it removes
/// starts and ends at ASCII bytes, so the rest stays valid UTF-8 (a
/// character-at-a-time copy once mangled non-ASCII text inside strings).
fn strip_jsonc(text: &str) -> String {
    let out = strip_trailing_commas(&strip_comments(text.as_bytes()));
    String::from_utf8(out).expect("only whole ASCII-delimited runs are removed")
}

/// The length of the string literal starting at `b[i]` (a `"`), quotes included.
fn string_len(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return j + 1 - i,
            _ => j += 1,
        }
    }
    b.len() - i
}

/// Comments out, newlines kept (error messages keep their line numbers).
fn strip_comments(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'"', _) => {
                let n = string_len(b, i);
                out.extend_from_slice(&b[i..i + n]);
                i += n;
            }
            (b'/', Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    if b[i] == b'\n' {
                        out.push(b'\n');
                    }
                    i += 1;
                }
                i = (i + 2).min(b.len());
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A comma followed (after whitespace) by `}` or `]` out; comments are gone.
fn strip_trailing_commas(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let n = string_len(b, i);
                out.extend_from_slice(&b[i..i + n]);
                i += n;
            }
            b',' => {
                let next = b[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
                if !matches!(next, Some(b'}' | b']')) {
                    out.push(b',');
                }
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_argv as argv;

    #[test]
    fn claude_desktop() {
        let s = parse(
            Path::new("claude_desktop_config.json"),
            r#"{"mcpServers": {
                "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/me/p"]},
                "time": {"command": "uvx", "args": ["mcp-server-time"]},
                "wrapped": {"command": "/usr/local/bin/mcpwatch", "args": ["exec", "--server", "git", "--", "uvx", "mcp-server-git"]},
                "remote": {"url": "https://example.com/mcp"}
            }}"#,
        )
        .unwrap();
        assert_eq!(s.len(), 3);
        let fs = &s[0];
        assert_eq!(fs.name, "filesystem");
        assert!(fs.matches(
            "/usr/bin/env",
            &argv(&["npx", "-y", "@modelcontextprotocol/server-filesystem", "/home/me/p"])
        ));
        assert!(fs.matches(
            "/usr/bin/node",
            &argv(&[
                "node",
                "/usr/bin/npx",
                "-y",
                "@modelcontextprotocol/server-filesystem",
                "/home/me/p"
            ])
        ));
        assert!(!fs.matches(
            "/usr/bin/env",
            &argv(&["npx", "-y", "@modelcontextprotocol/server-filesystem", "/other"])
        ));
        assert!(!fs.matches(
            "/usr/bin/timeout",
            &argv(&[
                "timeout",
                "9",
                "npx",
                "-y",
                "@modelcontextprotocol/server-filesystem",
                "/home/me/p"
            ])
        ));
        assert!(s[1].matches("/x/uvx", &argv(&["uvx", "mcp-server-time"])));
        assert_eq!(s[2].name, "git");
        assert!(s[2].wrapped);
        assert!(!s[2].matches("/usr/bin/uvx", &argv(&["uvx", "mcp-server-git"])));
    }

    #[test]
    fn vscode_mcp_json_with_comments_and_settings() {
        let s = parse(
            Path::new("mcp.json"),
            "{\n // my servers\n \"servers\": {\n  \"my memory\": {\"type\": \"stdio\", \"command\": \"npx\", /* pinned */ \"args\": [\"-y\", \"@modelcontextprotocol/server-memory\"],},\n },\n \"inputs\": []\n}",
        )
        .unwrap();
        assert_eq!(s[0].name, "my-memory");
        assert_eq!(s[0].args, ["-y", "@modelcontextprotocol/server-memory"]);
        let s = parse(
            Path::new("settings.json"),
            r#"{"editor.fontSize": 12, "mcp": {"servers": {"t": {"command": "python3", "args": ["-m", "mcp_server_time"]}}}}"#,
        )
        .unwrap();
        assert!(s[0].matches("/usr/bin/python3.11", &argv(&["python3", "-m", "mcp_server_time"])));
        assert!(strip_jsonc(r#"{"a": "http://x//y", "b": "/*no*/"}"#).contains("http://x//y"));
    }

    /// Found by `props::servers_come_back_as_written`: characters inside
    /// strings were copied a byte at a time as Latin-1 (`\u{feff}` came back
    /// as `ï»¿`, `josé` as `josÃ©`), so a server whose path holds one never matched.
    #[test]
    fn non_ascii_inside_strings_is_kept() {
        let text =
            "{\"mcpServers\": {\"é\": {\"command\": \"/home/josé/bin/srv\", \"args\": [\"\u{feff}\", \"日本\"]}}}";
        let s = parse(Path::new("mcp.json"), text).unwrap();
        assert_eq!(s[0].command, "/home/josé/bin/srv");
        assert_eq!(s[0].args, ["\u{feff}", "日本"]);
        assert_eq!(s[0].name, "-");
    }

    /// Found by `props::jsonc_means_what_the_json_without_comments_means`: a
    /// trailing comma followed by a comment was kept, and the file refused.
    #[test]
    fn a_trailing_comma_before_a_comment_is_removed() {
        let text = "[null//\n,null,[null,//\nnull,null],//\n]";
        assert_eq!(
            serde_json::from_str::<Value>(&strip_jsonc(text)).unwrap(),
            serde_json::json!([null, null, [null, null, null]])
        );
        let text = "{\"servers\": {\"a\": {\"command\": \"x\", /* last */}, // end\n}}";
        assert_eq!(parse(Path::new("mcp.json"), text).unwrap()[0].command, "x");
    }

    #[test]
    fn too_many_servers_are_refused() {
        let servers: Vec<String> = (0..=MAX_SERVERS)
            .map(|i| format!(r#""s{i}": {{"command": "x"}}"#))
            .collect();
        let text = format!(r#"{{"mcpServers": {{{}}}}}"#, servers.join(","));
        let e = parse(Path::new("/h/.cursor/mcp.json"), &text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/h/.cursor/mcp.json: 257 servers (at most 256 per host configuration): refused"
        );
    }

    #[test]
    fn broken_json_says_where() {
        let e = parse(Path::new("/h/.cursor/mcp.json"), "{\n \"mcpServers\": {\n  \"a\": }\n}").unwrap_err();
        assert!(e.to_string().starts_with("/h/.cursor/mcp.json:3:"), "{e}");
    }
}

#[cfg(test)]
mod props;
