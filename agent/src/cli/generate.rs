//! `mcpwatch generate`: the man pages and shell completions, made from the
//! command line's own definition (clap_mangen, clap_complete), so they never
//! disagree with `--help`. The installer and the package run it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// What to write: `man` (mcpwatch.1 and one page per verb) or
    /// `completions` (bash, zsh, fish).
    #[arg(value_parser = ["man", "completions"])]
    what: String,
    /// The directory they go in.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn run<C: clap::CommandFactory>(args: GenerateArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let cmd = C::command();
    match args.what.as_str() {
        "man" => man(cmd, &args.dir),
        _ => completions(cmd, &args.dir),
    }
}

fn man(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    // mcpwatch.1, mcpwatch-agent.1, ...: one page per verb, as git does.
    clap_mangen::generate_to(cmd, dir).with_context(|| format!("writing man pages in {}", dir.display()))
}

fn completions(mut cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    use clap_complete::Shell;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let f = clap_complete::generate_to(shell, &mut cmd, "mcpwatch", dir)
            .with_context(|| format!("writing {shell} completions in {}", dir.display()))?;
        println!("{}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[derive(clap::Parser)]
    #[command(name = "mcpwatch")]
    struct Demo {
        #[command(subcommand)]
        verb: Verb,
    }

    #[derive(clap::Subcommand)]
    enum Verb {
        /// Run it.
        Agent,
    }

    #[test]
    fn a_page_per_verb_and_a_completion_per_shell() {
        let d = std::env::temp_dir().join(format!("mcpwatch-generate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        man(Demo::command(), &d).unwrap();
        assert!(d.join("mcpwatch.1").is_file());
        let verb = std::fs::read_to_string(d.join("mcpwatch-agent.1")).unwrap();
        assert!(verb.contains("Run it"), "{verb}");
        completions(Demo::command(), &d).unwrap();
        let bash = std::fs::read_to_string(d.join("mcpwatch.bash")).unwrap();
        assert!(bash.contains("agent"), "{bash}");
        assert!(d.join("_mcpwatch").is_file() && d.join("mcpwatch.fish").is_file());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
