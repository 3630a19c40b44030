//! `mcpwatch check-manifests`: validates manifest files before they are deployed.

use std::path::PathBuf;

use mcpwatch::policy::manifest::{Manifest, limits};

#[derive(clap::Args)]
pub struct CheckManifestsArgs {
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// Returns the exit code: 0 when every manifest is valid, 1 otherwise.
pub fn run(args: CheckManifestsArgs) -> i32 {
    let mut bad = 0;
    // The agent's cap on all manifests together, counted as it loads them.
    let mut patterns = 0;
    for f in &files(&args.paths) {
        let res = mcpwatch::untrusted::read_text(f, mcpwatch::untrusted::MANIFEST_MAX_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|t| Manifest::parse(f, &t).map_err(|e| e.to_string()))
            .and_then(|m| match patterns + m.patterns {
                n if n > limits::MAX_TOTAL_PATTERNS => Err(format!(
                    "{}: its {} patterns bring the manifests' total to {n} (at most {}): refused",
                    f.display(),
                    m.patterns,
                    limits::MAX_TOTAL_PATTERNS
                )),
                n => {
                    patterns = n;
                    Ok(m)
                }
            });
        match res {
            Ok(m) => {
                eprintln!("{}: ok (server {})", f.display(), m.name);
                for w in &m.warnings {
                    eprintln!("{}: warning: {w}", f.display());
                }
            }
            Err(e) => {
                bad += 1;
                eprintln!("{e}");
            }
        }
    }
    i32::from(bad > 0)
}

/// The files named, a directory standing for its `*.json` (schemas aside), sorted.
fn files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for p in paths {
        match std::fs::read_dir(p) {
            Ok(rd) => {
                let mut v: Vec<PathBuf> = rd
                    .flatten()
                    .map(|e| e.path())
                    .filter(|f| {
                        f.extension().is_some_and(|e| e == "json") && !f.to_string_lossy().ends_with(".schema.json")
                    })
                    .collect();
                v.sort();
                files.extend(v);
            }
            Err(_) => files.push(p.clone()),
        }
    }
    files
}
