//! Properties of host-configuration parsing: JSON with comments and trailing
//! commas (as VS Code writes it) means the same as the JSON without them, and
//! what a server is called and runs survives whatever characters it holds.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::proptesting::{config, json, odd_text};

/// Decoration between tokens: nothing, spaces, a line comment, a block comment.
#[derive(Clone, Debug)]
enum Deco {
    None,
    Space,
    Line(String),
    Block(String),
}

fn deco() -> impl Strategy<Value = Deco> {
    prop_oneof![
        Just(Deco::None),
        Just(Deco::Space),
        odd_text().prop_map(|t| Deco::Line(t.replace('\n', " "))),
        odd_text().prop_map(|t| Deco::Block(t.replace("*/", "* /"))),
    ]
}

/// The decoration at `n` (cycled), then the next.
fn sep(decos: &[Deco], n: &mut usize, out: &mut String) {
    if decos.is_empty() {
        return;
    }
    match &decos[*n % decos.len()] {
        Deco::None => {}
        Deco::Space => out.push_str(" \t\r\n"),
        Deco::Line(t) => {
            out.push_str("//");
            out.push_str(t);
            out.push('\n');
        }
        Deco::Block(t) => {
            out.push_str("/*");
            out.push_str(t);
            out.push_str("*/");
        }
    }
    *n += 1;
}

/// Writes `v` as JSONC: decorations from `decos` (cycled) between tokens,
/// and a trailing comma after the last member of every other container.
fn jsonc(v: &Value, decos: &[Deco], n: &mut usize, out: &mut String) {
    let trailing = n.is_multiple_of(2);
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                sep(decos, n, out);
                jsonc(x, decos, n, out);
                sep(decos, n, out);
                if i + 1 < items.len() || trailing {
                    out.push(',');
                }
            }
            sep(decos, n, out);
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, x)) in map.iter().enumerate() {
                sep(decos, n, out);
                out.push_str(&Value::String(k.clone()).to_string());
                sep(decos, n, out);
                out.push(':');
                sep(decos, n, out);
                jsonc(x, decos, n, out);
                sep(decos, n, out);
                if i + 1 < map.len() || trailing {
                    out.push(',');
                }
            }
            sep(decos, n, out);
            out.push('}');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

fn server() -> impl Strategy<Value = (String, String, Vec<String>)> {
    (odd_text(), odd_text(), prop::collection::vec(odd_text(), 0..4))
}

proptest! {
    #![proptest_config(config(1024))]

    /// Comments and trailing commas anywhere between tokens change nothing.
    #[test]
    fn jsonc_means_what_the_json_without_comments_means(
        v in json(),
        decos in prop::collection::vec(deco(), 0..8),
    ) {
        let mut text = String::new();
        jsonc(&v, &decos, &mut 0, &mut text);
        let stripped = strip_jsonc(&text);
        let back: Value = serde_json::from_str(&stripped)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text:?}\n{stripped:?}")))?;
        // As serde_json reads the plain text (it reads some floats a bit off).
        let plain: Value = serde_json::from_str(&v.to_string()).expect("serde_json reads what it writes");
        prop_assert_eq!(back, plain);
    }

    /// A server's command and arguments come back exactly as written, whatever
    /// characters they hold; its name is one the agent accepts.
    #[test]
    fn servers_come_back_as_written(
        servers in prop::collection::vec(server(), 0..5),
        decos in prop::collection::vec(deco(), 0..6),
    ) {
        let mut table = serde_json::Map::new();
        for (name, command, args) in &servers {
            table.insert(name.clone(), json!({"command": command, "args": args}));
        }
        let doc = json!({"mcpServers": table});
        let mut text = String::new();
        jsonc(&doc, &decos, &mut 0, &mut text);
        let got = parse(Path::new("mcp.json"), &text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text:?}")))?;
        prop_assert_eq!(got.len(), table.len());
        for (s, (key, v)) in got.iter().zip(&table) {
            prop_assert_eq!(Some(s.command.as_str()), v["command"].as_str());
            prop_assert_eq!(&json!(s.args), &v["args"]);
            if !s.wrapped {
                prop_assert!(crate::pipeline::servers::validate_name(&s.name).is_ok(), "{key:?} -> {:?}", s.name);
            }
        }
    }

    /// Any text: servers, or an error placed in the file; never a panic.
    #[test]
    fn any_text_is_servers_or_a_placed_error(text in prop_oneof![
        odd_text(),
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        json().prop_map(|v| v.to_string()),
        (json(), 0..64usize).prop_map(|(v, cut)| {
            let s = v.to_string();
            s.char_indices().nth(cut).map_or(s.clone(), |(i, _)| s[..i].to_owned())
        }),
    ]) {
        match parse(Path::new("/h/.cursor/mcp.json"), &text) {
            Ok(servers) => {
                for s in servers.iter().filter(|s| !s.wrapped) {
                    prop_assert!(crate::pipeline::servers::validate_name(&s.name).is_ok(), "{:?}", s.name);
                }
            }
            Err(e) => {
                let HostConfigError::Json { line, .. } = &e else {
                    return Err(TestCaseError::fail(format!("not a JSON error: {e}")));
                };
                prop_assert!(*line >= 1, "{e}");
                prop_assert!(e.to_string().starts_with("/h/.cursor/mcp.json:"), "{e}");
            }
        }
    }
}
