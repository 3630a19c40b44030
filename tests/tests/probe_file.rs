//! The file probes: every path resolves to the file it names, through
//! dirfds, symlinks, `..` and /proc/self tricks; each operation with its
//! access, result and second path. A real process under a real agent.

use mcpwatch_tests::*;
use serde_json::Value;

fn path_is(e: &Value, p: &str) -> bool {
    e["path"] == p
}

/// A scratch tree: dir/secret, dir/link -> secret, dir/sub/.
fn tree(name: &str) -> std::path::PathBuf {
    let d = scratch_dir(name);
    std::fs::write(d.join("secret"), "s3cret").unwrap();
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::os::unix::fs::symlink(d.join("secret"), d.join("link")).unwrap();
    d
}

#[test]
fn file_paths_resolve_through_every_trick() {
    let d = tree("paths-tree");
    let dd = d.display();
    let agent = Agent::start("paths", &[]);
    agent.run_python(
        "files",
        &format!(
            r#"
import os
os.chdir("{dd}/sub")
fd = os.open("{dd}", os.O_RDONLY)
os.close(os.open("secret", os.O_RDONLY, dir_fd=fd))            # relative to a dirfd
open("../link").read()                                           # symlink to the secret, via ..
open("/proc/self/cwd/../secret").read()                          # /proc/self/cwd trick
open("/proc/self/root{dd}/secret").read()                        # /proc/self/root trick
try: open("../missing-file")                                     # failed relative open
except FileNotFoundError: pass
with open("{dd}/new", "w") as f: f.write("x")                    # create + write
os.rename("{dd}/new", "{dd}/secret")                             # rename over a file
os.mkdir("{dd}/made"); os.chmod("{dd}/made", 0o700); os.rmdir("{dd}/made")
os.symlink("{dd}/secret", "{dd}/link2"); os.unlink("{dd}/link2")
"#
        ),
    );
    let ev = agent.server_events("files");
    let secret = format!("{dd}/secret");
    let opens: Vec<&Value> = ev
        .iter()
        .filter(|e| e["kind"] == "file" && e["op"] == "open" && path_is(e, &secret))
        .collect();
    let given: Vec<&str> = opens.iter().map(|e| e["path_as_given"].as_str().unwrap()).collect();
    for g in [
        "secret",
        "../link",
        "/proc/self/cwd/../secret",
        &format!("/proc/self/root{dd}/secret"),
    ] {
        assert!(
            given.contains(&g),
            "{g} not resolved to {secret}: {given:?}\n{}",
            dump(&ev)
        );
    }
    assert!(
        opens
            .iter()
            .all(|e| e["path_resolved"] == true && e["result"].as_i64().unwrap() >= 0)
    );
    let missing = find(&ev, "file", |e| e["path_as_given"] == "../missing-file");
    assert_eq!(missing["path"], format!("{dd}/missing-file"));
    assert_eq!(missing["error"], "ENOENT");
    assert_eq!(missing["path_resolved"], false);
    let created = find(&ev, "file", |e| e["op"] == "open" && path_is(e, &format!("{dd}/new")));
    let access: Vec<&str> = created["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        access.contains(&"write") && access.contains(&"create") && access.contains(&"truncate"),
        "{access:?}"
    );
    let rename = find(&ev, "file", |e| e["op"] == "rename");
    assert_eq!(rename["path"], format!("{dd}/new"));
    assert_eq!(rename["path2"], secret);
    assert_eq!(rename["result"], 0);
    for op in ["mkdir", "chmod", "rmdir", "symlink", "unlink"] {
        let e = find(&ev, "file", |e| e["op"] == op);
        assert!(e["path"].as_str().unwrap().starts_with(&dd.to_string()), "{e}");
    }
    assert_eq!(find(&ev, "file", |e| e["op"] == "symlink")["path2"], secret);
    assert!(agent.stop().success());
}
