//! Built-in catalogue of credential locations. Any access (read, write, or a
//! failed attempt: probing counts) that the server's manifest does not name
//! explicitly raises a high-severity alert, whatever else it declares.
//!
//! Patterns are home-independent (`**/.ssh/**`): a server that reads another
//! user's, a fake, or a copied home's keys is caught the same way.

use std::{cell::RefCell, sync::OnceLock};

use foldhash::HashMap;

use super::glob::{GlobSet, PathGlob};

pub struct CredentialKind {
    /// Rule id (`cred.ssh`...).
    pub rule: &'static str,
    pub what: &'static str,
    pub patterns: &'static [&'static str],
    /// A manifest entry declares this kind explicitly only when its text names
    /// one of these (a broad `~/**` does not).
    pub markers: &'static [&'static str],
}

pub const CATALOGUE: &[CredentialKind] = &[
    CredentialKind {
        rule: "cred.ssh",
        what: "SSH keys and configuration",
        patterns: &["**/.ssh/**", "/etc/ssh/ssh_host_*_key"],
        markers: &[".ssh", "ssh_host_"],
    },
    // Private key material wherever a system keeps it: certificates and trust
    // stores beside them stay in the every-process baseline (`/etc/ssl`), the
    // keys do not. Web servers' keys (`/etc/nginx`, `/etc/apache2`,
    // `/var/lib/caddy`...) are `*.key` files under these roots. A `.pem` is a key only by its name here (the agent judges
    // the open, not the bytes): `privkey.pem`, `server-key.pem`, `x.key.pem`.
    CredentialKind {
        rule: "cred.tls_key",
        what: "a TLS private key",
        patterns: &[
            "/etc/ssl/private/**",
            "/etc/pki/**/private/**",
            "/etc/letsencrypt/{live,archive,keys}/**",
            "/{etc,srv,opt,usr/local/etc,var/lib}/**/*.key",
            "/{etc,srv,opt,usr/local/etc,var/lib}/**/*{privkey,private,-key,_key,.key}*.pem",
        ],
        markers: &["private", ".key", "privkey", "-key", "_key", "letsencrypt"],
    },
    CredentialKind {
        rule: "cred.cloud",
        what: "cloud provider credentials",
        patterns: &[
            "**/.aws/**",
            "**/.config/gcloud/**",
            "**/.azure/**",
            "**/.oci/**",
            "**/.config/doctl/**",
        ],
        markers: &[".aws", "gcloud", ".azure", ".oci", "doctl"],
    },
    CredentialKind {
        rule: "cred.kube",
        what: "Kubernetes credentials",
        patterns: &["**/.kube/**", "/etc/kubernetes/*.conf"],
        markers: &[".kube", "/etc/kubernetes"],
    },
    CredentialKind {
        rule: "cred.dotenv",
        what: "a .env file",
        patterns: &["**/.env", "**/.env.*"],
        markers: &[".env"],
    },
    CredentialKind {
        rule: "cred.netrc",
        what: "a .netrc file",
        patterns: &["**/.netrc", "**/_netrc"],
        markers: &["netrc"],
    },
    CredentialKind {
        rule: "cred.npmrc",
        what: "npm credentials",
        patterns: &["**/.npmrc"],
        markers: &[".npmrc"],
    },
    CredentialKind {
        rule: "cred.pypirc",
        what: "PyPI credentials",
        patterns: &["**/.pypirc"],
        markers: &[".pypirc"],
    },
    CredentialKind {
        rule: "cred.docker",
        what: "Docker registry credentials",
        patterns: &["**/.docker/config.json"],
        markers: &[".docker"],
    },
    CredentialKind {
        rule: "cred.git",
        what: "git credentials",
        patterns: &["**/.git-credentials", "**/.config/git/credentials"],
        markers: &["credentials"],
    },
    CredentialKind {
        rule: "cred.browser",
        what: "a browser profile",
        patterns: &[
            "**/.mozilla/firefox/**",
            "**/.config/google-chrome/**",
            "**/.config/chromium/**",
            "**/.config/BraveSoftware/**",
            "**/.config/microsoft-edge/**",
            "**/snap/firefox/**",
        ],
        markers: &["firefox", "chrome", "chromium", "BraveSoftware", "microsoft-edge"],
    },
    CredentialKind {
        rule: "cred.keyring",
        what: "a keyring or password store",
        patterns: &[
            "**/.local/share/keyrings/**",
            "**/.gnupg/**",
            "**/.password-store/**",
            "**/.config/keepassxc/**",
            "**/*.kdbx",
        ],
        markers: &["keyrings", ".gnupg", ".password-store", "keepassxc", ".kdbx"],
    },
    CredentialKind {
        rule: "cred.shell_history",
        what: "shell or REPL history",
        patterns: &[
            "**/.bash_history",
            "**/.zsh_history",
            "**/.sh_history",
            "**/.history",
            "**/.local/share/fish/fish_history",
            "**/.python_history",
            "**/.node_repl_history",
            "**/.psql_history",
            "**/.mysql_history",
        ],
        markers: &["history"],
    },
    CredentialKind {
        rule: "cred.shadow",
        what: "the system password hashes",
        patterns: &["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-"],
        markers: &["shadow"],
    },
];

/// Every pattern in one set, with the kind each belongs to.
fn compiled() -> &'static (GlobSet, Vec<usize>) {
    static C: OnceLock<(GlobSet, Vec<usize>)> = OnceLock::new();
    C.get_or_init(|| {
        let (kinds, globs): (Vec<usize>, Vec<PathGlob>) = CATALOGUE
            .iter()
            .enumerate()
            .flat_map(|(i, k)| {
                k.patterns
                    .iter()
                    .map(move |p| (i, PathGlob::new(p).expect("catalogue patterns are valid")))
            })
            .unzip();
        (GlobSet::new(&globs), kinds)
    })
}

/// Paths classified lately: a process's library and module searches repeat
/// the same few hundred paths at every start.
const CACHE_MAX: usize = 8192;

thread_local! {
    static CACHE: RefCell<HashMap<String, Option<usize>>> = RefCell::new(HashMap::default());
}

/// The credential kind a path belongs to, if any.
pub fn classify(path: &str) -> Option<&'static CredentialKind> {
    let kind = CACHE.with(|c| {
        if let Some(k) = c.borrow().get(path) {
            return *k;
        }
        let (set, kinds) = compiled();
        let k = set.first(path).map(|i| kinds[i]);
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(path.to_owned(), k);
        k
    });
    kind.map(|i| &CATALOGUE[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_locations() {
        let r = |p: &str| classify(p).map(|k| k.rule);
        assert_eq!(r("/tmp/fakehome/.ssh/id_rsa"), Some("cred.ssh"));
        assert_eq!(r("/root/.aws/credentials"), Some("cred.cloud"));
        assert_eq!(r("/etc/ssl/private/ssl-cert-snakeoil.key"), Some("cred.tls_key"));
        assert_eq!(r("/etc/pki/tls/private/localhost.key"), Some("cred.tls_key"));
        assert_eq!(r("/etc/letsencrypt/live/example.org/privkey.pem"), Some("cred.tls_key"));
        assert_eq!(r("/etc/nginx/certs/site.key"), Some("cred.tls_key"));
        assert_eq!(r("/srv/app/tls/server-key.pem"), Some("cred.tls_key"));
        assert_eq!(r("/opt/app/server.key.pem"), Some("cred.tls_key"));
        // Certificates and trust stores are not keys.
        assert_eq!(r("/etc/ssl/certs/ca-certificates.crt"), None);
        assert_eq!(r("/etc/ssl/certs/ISRG_Root_X1.pem"), None);
        assert_eq!(r("/etc/pki/tls/certs/ca-bundle.crt"), None);
        assert_eq!(r("/etc/letsencrypt/options-ssl-nginx.conf"), None);
        assert_eq!(r("/usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt"), None);
        assert_eq!(r("/home/u/.kube/config"), Some("cred.kube"));
        assert_eq!(r("/srv/app/.env"), Some("cred.dotenv"));
        assert_eq!(r("/srv/app/.env.production"), Some("cred.dotenv"));
        assert_eq!(r("/home/u/.netrc"), Some("cred.netrc"));
        assert_eq!(r("/home/u/.npmrc"), Some("cred.npmrc"));
        assert_eq!(r("/home/u/.pypirc"), Some("cred.pypirc"));
        assert_eq!(r("/home/u/.docker/config.json"), Some("cred.docker"));
        assert_eq!(r("/home/u/.git-credentials"), Some("cred.git"));
        assert_eq!(
            r("/home/u/.mozilla/firefox/x.default/logins.json"),
            Some("cred.browser")
        );
        assert_eq!(r("/home/u/.local/share/keyrings/login.keyring"), Some("cred.keyring"));
        assert_eq!(r("/home/u/.bash_history"), Some("cred.shell_history"));
        assert_eq!(r("/etc/shadow"), Some("cred.shadow"));
        assert_eq!(r("/home/u/.environment"), None);
        assert_eq!(r("/etc/passwd"), None);
        assert_eq!(r("/home/u/project/src/env.rs"), None);
    }
}
