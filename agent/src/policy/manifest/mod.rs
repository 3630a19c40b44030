//! Manifests: what one server declares it needs. JSON, one file per server, a
//! superset of ToolHive's permission profile (a ToolHive profile loads as-is).
//! The schema is `manifests/manifest.schema.json`; the reference is in the README.
//!
//! `schema` (the file as written) -> `compile` (patterns checked and built)
//! -> `model` (what the engine evaluates); `error` places a failure in the file.

mod compile;
pub mod env;
mod error;
pub mod gate;
pub mod limits;
mod model;
#[cfg(test)]
mod props;
mod schema;
pub mod siblings;

use std::path::Path;

pub use compile::expand;

/// `${roots}`: the roots the client gives the server (MCP `roots/list`),
/// with the values of an `args` entry of that name when there is one.
pub const CLIENT_ROOTS: &str = "roots";
pub use error::ManifestError;
pub use model::{ArgBinding, ExePattern, Manifest, Outbound, ToolGrant, basename};
pub use schema::{ManifestFile, Mode};

impl Manifest {
    /// Parses and checks one manifest file's text.
    /// Caps (`limits`) are checked before anything is compiled.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ManifestError> {
        if let Some(at) = limits::nesting(text) {
            return Err(ManifestError::nested(file, text, at));
        }
        let de = &mut serde_json::Deserializer::from_str(text);
        let raw: ManifestFile = serde_path_to_error::deserialize(de).map_err(|e| ManifestError::syntax(file, e))?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let patterns = limits::check(&raw).map_err(|f| ManifestError::entry(file, text, f))?;
        let mut m = Self::compile(raw, Some(file), &stem).map_err(|f| ManifestError::entry(file, text, f))?;
        m.patterns = patterns;
        Ok(m)
    }

    /// The manifest of a server nobody declared: the runtime baseline only.
    pub fn least_privilege(name: &str) -> Self {
        Self::compile(ManifestFile::default(), None, name).expect("the empty manifest compiles")
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A manifest file `demo.json`.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("/etc/mcpwatch/manifests/demo.json"), text)
    }
}
