//! `mcpwatch check-manifests`: validates manifest files before they are deployed.

use std::path::PathBuf;

use mcpwatch::{
    enforce::sandbox::landlock_notes,
    policy::manifest::{ExePattern, Manifest, Mode, limits},
};

#[derive(clap::Args)]
pub struct CheckManifestsArgs {
    /// Manifest files, or directories standing for their `*.json` files (schemas aside).
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// Returns the exit code: 0 when every manifest is valid, 1 otherwise (a
/// directory without manifests counts as wrong: nothing was checked, and an
/// agent reading it would declare no server).
pub fn run(args: CheckManifestsArgs) -> i32 {
    let (files, empty) = files(&args.paths);
    let mut bad = empty.len();
    for d in &empty {
        eprintln!("{}: no manifests here (no *.json file)", d.display());
    }
    // The agent's cap on all manifests together, counted as it loads them.
    let mut patterns = 0;
    for f in &files {
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
                if m.mode == Some(Mode::Enforce) {
                    for n in landlock_notes(enforced_patterns(&m)) {
                        eprintln!("{}: enforce: {n}", f.display());
                    }
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

/// The path patterns Landlock is given: read, write, and exec paths (a
/// program named without a directory is looked up in the bin directories).
fn enforced_patterns(m: &Manifest) -> Vec<(&'static str, &str)> {
    let mut out: Vec<(&'static str, &str)> = Vec::new();
    out.extend(m.read.iter().map(|p| ("read", p.as_str())));
    out.extend(m.write.iter().map(|p| ("write", p.as_str())));
    for e in &m.exec {
        if let ExePattern::Path(g) = e {
            out.push(("exec", g.text.as_str()));
        }
    }
    out
}

/// The files named, a directory standing for its `*.json` (schemas aside),
/// sorted; and the directories that hold none.
fn files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut empty = Vec::new();
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
                if v.is_empty() {
                    empty.push(p.clone());
                }
                files.extend(v);
            }
            Err(_) => files.push(p.clone()),
        }
    }
    (files, empty)
}
