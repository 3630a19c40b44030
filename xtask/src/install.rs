//! `cargo xtask install` and `cargo xtask deb`: the agent as an operator
//! gets it — the binary, the shipped manifests, a commented configuration and
//! the hardened systemd unit — into a root (the system, a DESTDIR), or as a
//! Debian package built with `dpkg-deb` from the same staged tree.
//!
//! `dpkg-deb` rather than cargo-deb: the package is the staged tree plus a
//! control file, and dpkg-deb ships with every Debian system; cargo-deb would
//! be a minutes-long `cargo install` on every fresh CI machine for the same
//! result.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Where things go under a root, for a prefix such as `/usr/local` or `/usr`.
pub struct Layout {
    pub root: PathBuf,
    pub prefix: PathBuf,
}

impl Layout {
    fn under(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
    pub fn bin(&self) -> PathBuf {
        self.under(self.prefix.join("bin/mcpwatch"))
    }
    pub fn manifests(&self) -> PathBuf {
        self.under("/etc/mcpwatch/manifests")
    }
    pub fn config(&self) -> PathBuf {
        self.under("/etc/mcpwatch/config.toml")
    }
    pub fn man(&self) -> PathBuf {
        self.under(self.prefix.join("share/man/man1"))
    }
    /// Where each shell looks for completions under the prefix.
    pub fn completions(&self) -> [(&'static str, PathBuf); 3] {
        [
            (
                "mcpwatch.bash",
                self.under(self.prefix.join("share/bash-completion/completions/mcpwatch")),
            ),
            (
                "_mcpwatch",
                self.under(self.prefix.join("share/zsh/vendor-completions/_mcpwatch")),
            ),
            (
                "mcpwatch.fish",
                self.under(self.prefix.join("share/fish/vendor_completions.d/mcpwatch.fish")),
            ),
        ]
    }
    pub fn unit(&self) -> PathBuf {
        // Units of packages go under /lib, an administrator's under /etc.
        match self.prefix == Path::new("/usr") {
            true => self.under("/lib/systemd/system/mcpwatch.service"),
            false => self.under("/etc/systemd/system/mcpwatch.service"),
        }
    }
}

/// What was written, for the report.
#[derive(Debug, Default)]
pub struct Installed {
    pub files: Vec<PathBuf>,
    /// An existing configuration left as it was (the new one beside it).
    pub kept_config: Option<PathBuf>,
}

/// Copies everything into `layout` from the source tree `src` and the built
/// binary `bin`. An existing configuration is never overwritten: the shipped
/// one goes beside it as `config.toml.new`.
pub fn install_files(src: &Path, bin: &Path, layout: &Layout) -> anyhow::Result<Installed> {
    let mut out = Installed::default();
    let mut put = |from: &Path, to: PathBuf, mode: u32| -> anyhow::Result<()> {
        copy(from, &to, mode)?;
        out.files.push(to);
        Ok(())
    };
    put(bin, layout.bin(), 0o755)?;
    let shipped = src.join("manifests");
    let mut manifests: Vec<PathBuf> = fs::read_dir(&shipped)
        .with_context(|| format!("listing {}", shipped.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    manifests.sort();
    for m in manifests.iter().filter(|m| m.extension().is_some_and(|e| e == "json")) {
        put(m, layout.manifests().join(m.file_name().expect("a file")), 0o644)?;
    }
    let config = layout.config();
    let shipped_config = src.join("packaging/config.toml");
    if config.exists() {
        let new = config.with_extension("toml.new");
        put(&shipped_config, new, 0o644)?;
        out.kept_config = Some(config);
    } else {
        put(&shipped_config, config, 0o644)?;
    }
    // Man pages and completions, from the installed binary's own command line.
    let generated = std::env::temp_dir().join(format!("mcpwatch-generated-{}", std::process::id()));
    for what in ["man", "completions"] {
        crate::run(Command::new(bin).args(["generate", what]).arg(generated.join(what)))?;
    }
    for page in fs::read_dir(generated.join("man"))? {
        let page = page?.path();
        put(&page, layout.man().join(page.file_name().expect("a page")), 0o644)?;
    }
    for (name, to) in layout.completions() {
        put(&generated.join("completions").join(name), to, 0o644)?;
    }
    fs::remove_dir_all(&generated)?;
    let unit_text = fs::read_to_string(src.join("packaging/mcpwatch.service"))?
        .replace("@BINDIR@", &layout.prefix.join("bin").to_string_lossy());
    let unit = layout.unit();
    write(&unit, unit_text.as_bytes(), 0o644)?;
    out.files.push(unit);
    Ok(out)
}

fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write(to, &bytes, mode)
}

/// Writes whole (a temporary file renamed over), so a running agent's binary
/// is replaced, never rewritten under it.
fn write(to: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = to.parent().expect("a file under a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", to.file_name().expect("a file").to_string_lossy()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
    Ok(())
}

/// `cargo xtask install`: into `destdir` (the system when None); `bin`, or
/// a release build.
pub fn install(destdir: Option<&Path>, prefix: &Path, bin: Option<PathBuf>) -> anyhow::Result<()> {
    let bin = match bin {
        Some(b) => b,
        None => crate::build(true)?,
    };
    let layout = Layout {
        root: destdir.map(Path::to_owned).unwrap_or_else(|| PathBuf::from("/")),
        prefix: prefix.to_owned(),
    };
    let done = install_files(&crate::root(), &bin, &layout)?;
    for f in &done.files {
        println!("installed {}", f.display());
    }
    if let Some(c) = &done.kept_config {
        println!("kept {} (the shipped one is beside it, config.toml.new)", c.display());
    }
    if destdir.is_none() && Path::new("/run/systemd/system").exists() {
        crate::run(Command::new("systemctl").arg("daemon-reload"))?;
        println!("next: systemctl enable --now mcpwatch");
    }
    Ok(())
}

/// The package's control file.
fn control(version: &str, installed_kib: u64) -> String {
    format!(
        "Package: mcpwatch\nVersion: {version}\nArchitecture: amd64\nMaintainer: mcpwatch developers\n\
         Installed-Size: {installed_kib}\nDepends: libc6\nSection: admin\nPriority: optional\n\
         Description: watch MCP servers in the kernel against what they declared\n \
         eBPF host agent: follows every process of every MCP server, judges it against\n \
         its manifest, enforces it, and reports to SIEMs and Prometheus.\n"
    )
}

/// The package's maintainer scripts: systemd re-reads its units when one is
/// installed or removed (else `systemctl enable --now mcpwatch` right after
/// `dpkg -i` on an upgraded unit runs the old one), and a running agent is
/// stopped before its binary goes. Each only when systemd runs (a container,
/// a chroot: nothing to tell).
const MAINTAINER_SCRIPTS: &[(&str, &str)] = &[
    (
        "postinst",
        "#!/bin/sh\nset -e\nif [ \"$1\" = configure ] && [ -d /run/systemd/system ]; then\n    \
         systemctl daemon-reload || true\nfi\n",
    ),
    (
        "prerm",
        "#!/bin/sh\nset -e\nif [ \"$1\" = remove ] && [ -d /run/systemd/system ]; then\n    \
         systemctl stop mcpwatch.service || true\nfi\n",
    ),
    (
        "postrm",
        "#!/bin/sh\nset -e\nif { [ \"$1\" = remove ] || [ \"$1\" = purge ]; } && [ -d /run/systemd/system ]; then\n    \
         systemctl daemon-reload || true\nfi\n",
    ),
];

/// `cargo xtask deb`: target/debian/mcpwatch_VERSION_amd64.deb.
pub fn deb() -> anyhow::Result<PathBuf> {
    let bin = crate::build(true)?;
    let version = env!("CARGO_PKG_VERSION");
    let out = crate::root().join("target/debian");
    let stage = out.join("stage");
    let _ = fs::remove_dir_all(&stage);
    let layout = Layout {
        root: stage.clone(),
        prefix: PathBuf::from("/usr"),
    };
    install_files(&crate::root(), &bin, &layout)?;
    let size: u64 = walk(&stage)?
        .iter()
        .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    write(
        &stage.join("DEBIAN/control"),
        control(version, size.div_ceil(1024)).as_bytes(),
        0o644,
    )?;
    // dpkg keeps an administrator's edits of these across upgrades and purges them.
    write(&stage.join("DEBIAN/conffiles"), b"/etc/mcpwatch/config.toml\n", 0o644)?;
    for (script, text) in MAINTAINER_SCRIPTS {
        write(&stage.join("DEBIAN").join(script), text.as_bytes(), 0o755)?;
    }
    let deb = out.join(format!("mcpwatch_{version}_amd64.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb)
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb failed: {status}");
    }
    println!("{}", deb.display());
    Ok(deb)
}

/// The package as an operator meets it: installed with dpkg, the binary runs,
/// the unit verifies, the configuration is in place; purged, nothing is left.
/// Part of `cargo xtask test` (the release build is there from the bench
/// smoke run). A machine where mcpwatch is already installed as a package is
/// left alone.
pub fn package_check() -> anyhow::Result<()> {
    if Command::new("dpkg").args(["-s", "mcpwatch"]).output()?.status.success() {
        println!("package check skipped: a mcpwatch package is installed on this machine");
        return Ok(());
    }
    let deb = deb()?;
    let systemd = FakeSystemd::new()?;
    crate::run(&mut systemd.dpkg(&["-i"], &deb))?;
    let checked = (|| -> anyhow::Result<()> {
        systemd.expect(&["daemon-reload"], "after dpkg -i")?;
        let out = Command::new("/usr/bin/mcpwatch").arg("--version").output()?;
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).starts_with("mcpwatch ") {
            bail!("the installed mcpwatch does not run: {out:?}");
        }
        crate::run(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/mcpwatch.service"]))?;
        for f in [
            "/etc/mcpwatch/config.toml",
            "/etc/mcpwatch/manifests/filesystem.json",
            "/usr/share/man/man1/mcpwatch-agent.1",
            "/usr/share/bash-completion/completions/mcpwatch",
        ] {
            if !Path::new(f).is_file() {
                bail!("the package did not install {f}");
            }
        }
        Ok(())
    })();
    crate::run(&mut systemd.dpkg(&["--purge"], Path::new("mcpwatch")))?;
    checked?;
    systemd.expect(
        // postrm runs at `remove` and again at `purge`.
        &[
            "daemon-reload",
            "stop mcpwatch.service",
            "daemon-reload",
            "daemon-reload",
        ],
        "after dpkg --purge",
    )?;
    for f in [
        "/usr/bin/mcpwatch",
        "/etc/mcpwatch",
        "/lib/systemd/system/mcpwatch.service",
    ] {
        if Path::new(f).exists() {
            bail!("dpkg --purge left {f}");
        }
    }
    println!("package check: {} installed, verified and purged", deb.display());
    Ok(())
}

/// dpkg as on a host where systemd runs: in a mount namespace of its own,
/// `/run` is a tmpfs holding `/run/systemd/system`, and `systemctl` is a stub
/// that writes down what it was asked (this machine may run no systemd; a
/// machine that does keeps its own untouched).
struct FakeSystemd {
    dir: PathBuf,
}

impl FakeSystemd {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("mcpwatch-fake-systemd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let log = dir.join("calls");
        write(
            &dir.join("bin/systemctl"),
            format!("#!/bin/sh\necho \"$*\" >>{}\n", log.display()).as_bytes(),
            0o755,
        )?;
        Ok(Self { dir })
    }

    fn dpkg(&self, args: &[&str], what: &Path) -> Command {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec dpkg \"$@\"")
            .arg("dpkg")
            .args(args)
            .arg(what)
            .env("PATH", path);
        c
    }

    /// The maintainer scripts made exactly these calls so far.
    fn expect(&self, calls: &[&str], when: &str) -> anyhow::Result<()> {
        let log = fs::read_to_string(self.dir.join("calls")).unwrap_or_default();
        let got: Vec<&str> = log.lines().collect();
        if got != calls {
            bail!("{when}: the maintainer scripts called systemctl {got:?}, expected {calls:?}");
        }
        Ok(())
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn walk(d: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(d)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_puts_everything_in_place_and_keeps_an_edited_config() {
        let root = std::env::temp_dir().join(format!("xtask-install-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        // A stand-in for the built binary that answers `generate` like it.
        let bin = root.join("built-mcpwatch");
        fs::create_dir_all(&root).unwrap();
        fs::write(
            &bin,
            "#!/bin/sh\nmkdir -p \"$3\"; if [ \"$2\" = man ]; then echo page > \"$3/mcpwatch.1\"; \
             else for f in mcpwatch.bash _mcpwatch mcpwatch.fish; do echo c > \"$3/$f\"; done; fi\n",
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let layout = Layout {
            root: root.join("dest"),
            prefix: PathBuf::from("/usr/local"),
        };
        let first = install_files(&crate::root(), &bin, &layout).unwrap();
        assert!(first.kept_config.is_none());
        assert!(root.join("dest/usr/local/bin/mcpwatch").is_file());
        assert!(root.join("dest/etc/mcpwatch/manifests/filesystem.json").is_file());
        assert!(root.join("dest/etc/mcpwatch/manifests/manifest.schema.json").is_file());
        assert!(root.join("dest/usr/local/share/man/man1/mcpwatch.1").is_file());
        assert!(
            root.join("dest/usr/local/share/bash-completion/completions/mcpwatch")
                .is_file()
        );
        let unit = fs::read_to_string(root.join("dest/etc/systemd/system/mcpwatch.service")).unwrap();
        assert!(unit.contains("ExecStart=/usr/local/bin/mcpwatch agent"), "{unit}");
        assert!(!unit.contains("@BINDIR@"), "the placeholder is filled: {unit}");
        // An administrator's edit survives a second install.
        fs::write(layout.config(), "state_dir = \"/srv/m\"\n").unwrap();
        let second = install_files(&crate::root(), &bin, &layout).unwrap();
        assert_eq!(second.kept_config.as_deref(), Some(layout.config().as_path()));
        assert_eq!(fs::read_to_string(layout.config()).unwrap(), "state_dir = \"/srv/m\"\n");
        assert!(layout.config().with_extension("toml.new").is_file());
        fs::remove_dir_all(&root).unwrap();
    }
}
