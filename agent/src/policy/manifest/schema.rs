//! The manifest file as written: the serde format (`manifests/manifest.schema.json`).

use std::{collections::BTreeMap, fmt, marker::PhantomData};

use serde::{Deserialize, Serialize};

/// The file as written.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    #[serde(default, rename = "$schema")]
    pub schema: Option<String>,
    /// Server name (default: the file name without `.json`).
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `audit` or `enforce` (none: the configuration's `enforce.default_mode`).
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default, rename = "match")]
    pub matcher: MatchSpec,
    /// Values taken from the server's own command line, usable as `${NAME}` in paths.
    #[serde(default)]
    pub args: BTreeMap<String, ArgSpec>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub network: NetworkSpec,
    /// Addresses the server may listen on (`127.0.0.1:8080`, `[::1]:*`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// Programs the server may run (a name, or an absolute path glob).
    #[serde(default)]
    pub exec: Vec<String>,
    /// ToolHive's container flag: accepted, meaningless on a host.
    #[serde(default)]
    pub privileged: bool,
    /// Per-tool narrowing: while a call of the tool is in flight, each
    /// category given here replaces the server-wide one.
    #[serde(default, deserialize_with = "unique_map")]
    pub tools: BTreeMap<String, ToolSpec>,
    /// The approved tool pins (tool name -> `sha256:...`, as `mcpwatch pins
    /// show` prints them): the baseline of rug-pull detection instead of the
    /// first listing seen.
    #[serde(default, deserialize_with = "unique_map_some")]
    pub pins: Option<BTreeMap<String, String>>,
    /// Relay the server through the wrapper's gate.
    #[serde(default)]
    pub gate: Option<super::gate::GateSection>,
}

/// One tool's grants as written: an absent category falls back to the
/// server-wide one.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ToolNetworkSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
}

/// The top-level `network` shape; `outbound` and `inbound` each replace the
/// server-wide one when given, and fall back to it when not.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ToolNetworkSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundSpec>,
    /// Accepted for the shape's sake, meaningless on a host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A JSON object whose keys must be unique: serde_json keeps the last of
/// duplicate keys silently, and one tool's grant must not hide another's.
pub(super) fn unique_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(k) = map.next_key::<String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!("`{k}` is given twice")));
                }
                let v = map.next_value()?;
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(PhantomData))
}

fn unique_map_some<'de, D, V>(d: D) -> Result<Option<BTreeMap<String, V>>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    unique_map(d).map(Some)
}

#[derive(Deserialize, Serialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Report only; alerts enforcement would have blocked say so (`would_block`).
    #[default]
    Audit,
    /// The wrapper sandboxes the server (Landlock, seccomp) before it runs.
    Enforce,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Names given to the wrapper (`mcpwatch exec --server NAME`) or in a host configuration.
    #[serde(default)]
    pub server: Vec<String>,
    /// Executable path globs (`**/node`) or names.
    #[serde(default)]
    pub exe: Vec<String>,
    /// Regular expressions searched in the arguments joined by spaces.
    #[serde(default)]
    pub argv: Vec<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ArgSpec {
    /// Regex naming the server's own command-line element (e.g. `server-filesystem`):
    /// only command lines with such an element bind values.
    pub from: String,
    /// The value of this flag (`--repository X`, `--repository=X`); without it,
    /// every non-flag argument after the `from` element.
    #[serde(default)]
    pub flag: Option<String>,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    #[serde(default)]
    pub outbound: OutboundSpec,
    #[serde(default)]
    pub inbound: InboundSpec,
    /// ToolHive's container network mode: accepted, meaningless on a host.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct OutboundSpec {
    #[serde(default)]
    pub insecure_allow_all: bool,
    /// `example.com`, `.example.com` (the domain and below), `10.0.0.0/8`,
    /// `localhost`, or any of them with `:PORT`.
    #[serde(default)]
    pub allow_host: Vec<String>,
    /// Ports allowed with every `allow_host` entry that has none (empty: any port).
    #[serde(default)]
    pub allow_port: Vec<u16>,
    /// ToolHive: `tcp`, `udp` (empty: both).
    #[serde(default)]
    pub allow_transport: Vec<String>,
}

#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct InboundSpec {
    /// Peers the server may accept connections from.
    #[serde(default)]
    pub allow_host: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use crate::policy::manifest::expand;

    #[test]
    fn toolhive_profile_loads_as_is() {
        // ToolHive's own profile format (pkg/permissions), unchanged.
        let m = parse(
            r#"{
  "name": "github",
  "read": ["/var/run/docker.sock", "/home/u/data:/data"],
  "write": [],
  "network": {
    "outbound": {
      "insecure_allow_all": false,
      "allow_transport": ["tcp"],
      "allow_host": ["localhost", ".github.com", "api.example.org"],
      "allow_port": [443, 80]
    },
    "inbound": { "allow_host": ["127.0.0.1"] }
  },
  "privileged": false
}"#,
        )
        .unwrap();
        assert_eq!(m.name, "github");
        assert_eq!(m.outbound.hosts.len(), 3);
        assert_eq!(m.outbound.ports, [443, 80]);
        assert_eq!(expand(&m.read[1], "/h", &|_| vec![]), ["/home/u/data"]);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = parse("{\"reads\": []}").unwrap_err();
        assert!(e.what.contains("unknown field `reads`"), "{e}");
        let e = parse("{\"network\": {\"outbound\": {\"allow_hosts\": []}}}").unwrap_err();
        assert_eq!(e.field, "network.outbound.allow_hosts");
    }
}
