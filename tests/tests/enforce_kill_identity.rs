//! The kill layer's decisions by identity, on the real kernel, for servers
//! the agent did not launch (found by a manifest's `match` rule): an exec of
//! a program outside the declared set (by the executed file's device and
//! inode), a connect outside the allowlist (at connect's exit), and a
//! credential reached under another name (a hardlink in a declared
//! directory, a bind mount, a renamed `~/.ssh`), which raises the
//! credential alert for any watched process. Without the layer (simulated
//! missing) an enforced server starts with `enforce.degraded`.

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use mcpwatch_tests::{policy::*, *};
use serde_json::{Value, json};

/// A manifests directory holding `m` (matched by `script` on the command line).
fn manifest(test: &str, script: &str, mut m: Value) -> PathBuf {
    let d = scratch_dir(&format!("{test}-manifests"));
    m["match"] = json!({"argv": [script.replace('.', "\\.")]});
    std::fs::write(d.join(format!("{}.json", m["name"].as_str().unwrap())), m.to_string()).unwrap();
    d
}

/// A Python script at `dir/name` that waits for a line on stdin, then runs `body`.
fn script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("import os, socket, subprocess, sys\nsys.stdin.readline()\n{body}"),
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

/// Starts `argv` (env `HOME`), waits until `server` is watched, runs
/// `between`, tells it to go; returns its stdout and exit status.
fn run_watched(
    agent: &Agent,
    argv: &[&str],
    home: &Path,
    server: &str,
    between: impl FnOnce(),
) -> (String, std::process::ExitStatus) {
    let watches = |ev: &[Value]| {
        ev.iter()
            .filter(|e| e["kind"] == "watch" && e["server"] == server)
            .count()
    };
    let before = watches(&agent.events());
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    agent.wait_events(&format!("{server} watched"), |ev| watches(ev) > before);
    // The kill set is written right after the watch record.
    std::thread::sleep(Duration::from_millis(300));
    between();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status)
}

/// A home whose `.ssh/id_rsa` is a fake key.
fn fake_home(test: &str) -> PathBuf {
    let home = scratch_dir(&format!("{test}-home")).canonicalize().unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_rsa"), "FAKE-PRIVATE-KEY-MATERIAL\n").unwrap();
    home
}

const RUN_TWO: &str = "for p in sys.argv[1:]:\n    r = subprocess.run([p], capture_output=True)\n    \
                       print(os.path.basename(p) + ':' + str(r.returncode) + ':' + r.stdout.decode().strip(), flush=True)\n";

#[test]
fn an_exec_outside_the_declared_programs_is_killed_before_it_runs_and_audit_mode_says_it_would_be() {
    let dir = scratch_dir("killx-scripts");
    let home = fake_home("killx");
    let enf = script(&dir, "execset_enf.py", RUN_TWO);
    let m = json!({"name": "execk", "mode": "enforce", "exec": ["true"]});
    let d = manifest("killx", "execset_enf.py", m);
    let agent = agent_with("killx", &d, &[]);
    let (out, status) = run_watched(
        &agent,
        &[&py(), &enf, "/usr/bin/true", "/usr/bin/id"],
        &home,
        "execk",
        || {},
    );
    assert!(status.success(), "{status}");
    // The declared program ran; the other died at its exec (its output never came).
    assert_eq!(out, "true:0:\nid:-9:\n", "{}", agent.log());
    let ev = agent.wait_events("the exec's kill", |ev| {
        !by_rule(ev, "execk", "enforce.denied").is_empty()
    });
    let a = by_rule(&ev, "execk", "enforce.denied")[0];
    assert_eq!(
        (a["layer"].as_str(), a["evidence"]["op"].as_str()),
        (Some("kill"), Some("exec")),
        "{a}"
    );
    assert!(a["evidence"]["rules"].to_string().contains("exec.undeclared"), "{a}");
    assert!(agent.stop().success());

    // Audit mode: it runs, and the alert says the kill layer would block it.
    let aud = script(&dir, "execset_aud.py", RUN_TWO);
    let m = json!({"name": "execa", "mode": "audit", "exec": ["true"]});
    let d = manifest("killx-aud", "execset_aud.py", m);
    let agent = agent_with("killx-aud", &d, &[]);
    let (out, status) = run_watched(&agent, &[&py(), &aud, "/usr/bin/id"], &home, "execa", || {});
    assert!(status.success() && out.starts_with("id:0:uid="), "{out}");
    let ev = agent.wait_events("exec.undeclared", |ev| {
        !by_rule(ev, "execa", "exec.undeclared").is_empty()
    });
    let a = by_rule(&ev, "execa", "exec.undeclared")[0];
    assert_eq!(
        (a["would_block"].as_bool(), a["layer"].as_str()),
        (Some(true), Some("kill")),
        "{a}"
    );
    assert!(agent.stop().success());
}

#[test]
fn a_connect_outside_the_allowlist_is_killed_before_the_listener_gets_a_byte() {
    let declared = TcpListener::bind("127.0.0.1:0").unwrap();
    let undeclared = TcpListener::bind("127.0.0.1:0").unwrap();
    let (p_ok, p_bad) = (
        declared.local_addr().unwrap().port(),
        undeclared.local_addr().unwrap().port(),
    );
    let heard = |l: TcpListener| {
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            String::from_utf8_lossy(&got).into_owned()
        })
    };
    let (ok, bad) = (heard(declared), heard(undeclared));
    let dir = scratch_dir("killn-scripts");
    let home = fake_home("killn");
    // IPv4 first, then the undeclared port through an IPv4-mapped IPv6 address.
    let body = "for port, fam, host in [(int(sys.argv[1]), socket.AF_INET, '127.0.0.1'), \
                (int(sys.argv[2]), socket.AF_INET6, '::ffff:127.0.0.1')]:\n    \
                s = socket.socket(fam, socket.SOCK_STREAM)\n    s.connect((host, port))\n    \
                s.sendall(b'data-for-%d' % port)\n    s.close()\n    print('sent', port, flush=True)\n";
    let enf = script(&dir, "connect_enf.py", body);
    let m = json!({
        "name": "netk",
        "mode": "enforce",
        "network": {"outbound": {"allow_host": [format!("127.0.0.1:{p_ok}")]}},
    });
    let d = manifest("killn", "connect_enf.py", m);
    let agent = agent_with("killn", &d, &[]);
    let (out, status) = run_watched(
        &agent,
        &[&py(), &enf, &p_ok.to_string(), &p_bad.to_string()],
        &home,
        "netk",
        || {},
    );
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status} {out}");
    assert_eq!(out, format!("sent {p_ok}\n"));
    assert_eq!(ok.join().unwrap(), format!("data-for-{p_ok}"));
    assert_eq!(bad.join().unwrap(), "", "the undeclared listener got data");
    let ev = agent.wait_events("the connect's kill", |ev| {
        !by_rule(ev, "netk", "enforce.denied").is_empty()
    });
    let a = by_rule(&ev, "netk", "enforce.denied")[0];
    assert_eq!(a["layer"], "kill", "{a}");
    assert!(a.to_string().contains(&p_bad.to_string()), "{a}");
    assert!(agent.stop().success());
}

#[test]
fn without_the_kill_layer_a_discovered_enforced_server_starts_degraded_and_is_not_killed() {
    let dir = scratch_dir("killdeg-scripts");
    let home = fake_home("killdeg");
    let reader = script(
        &dir,
        "cred_deg.py",
        "print('READ:' + open(os.path.join(os.environ['HOME'], '.ssh', 'id_rsa')).read().strip(), flush=True)\n",
    );
    let d = manifest("killdeg", "cred_deg.py", json!({"name": "credd", "mode": "enforce"}));
    let m = d.to_string_lossy().into_owned();
    let agent = Agent::start_with_config(
        "killdeg",
        "[enforce]\nsimulate_missing = [\"kill\"]\n",
        &["--manifests", &m, "--no-user-host-configs"],
    );
    let (out, status) = run_watched(&agent, &[&py(), &reader], &home, "credd", || {});
    assert_eq!(out, "READ:FAKE-PRIVATE-KEY-MATERIAL\n");
    assert!(status.success(), "{status}");
    let ev = agent.wait_events("enforce.degraded and the credential alert", |ev| {
        !by_rule(ev, "credd", "enforce.degraded").is_empty() && !by_rule(ev, "credd", "cred.ssh").is_empty()
    });
    let deg = by_rule(&ev, "credd", "enforce.degraded");
    assert_eq!(deg.len(), 1, "{}", dump(&ev));
    assert_eq!(deg[0]["evidence"]["missing"], json!(["kill"]));
    let cred = by_rule(&ev, "credd", "cred.ssh")[0];
    assert_eq!(
        (cred["would_block"].as_bool(), cred["layer"].as_str()),
        (Some(true), Some("kill")),
        "{cred}"
    );
    assert!(by_rule(&ev, "credd", "enforce.denied").is_empty());
    assert!(agent.stop().success());
}

const READ_ARG: &str = "print('READ:' + open(sys.argv[1]).read().strip(), flush=True)\n";

#[test]
fn a_credential_under_another_name_is_still_a_credential_hardlink_bind_mount_and_renamed_directory() {
    let dir = scratch_dir("killid-scripts");
    let home = fake_home("killid");
    let declared = scratch_dir("killid-declared").canonicalize().unwrap();
    let link = declared.join("notes.txt");
    std::fs::hard_link(home.join(".ssh/id_rsa"), &link).unwrap();
    let reader = script(&dir, "cred_alias.py", READ_ARG);
    // The bind mount's launcher (unshare, sh, mount) is the server too: declared.
    let m = json!({
        "name": "credid",
        "mode": "enforce",
        "read": [format!("{}/**", declared.display())],
        "exec": ["sh", "mount", py()],
    });
    let d = manifest("killid", "cred_alias.py", m);
    let agent = agent_with("killid", &d, &[]);
    let link_s = link.to_string_lossy().into_owned();

    // 1. A hardlink in a declared directory.
    let (out, status) = run_watched(&agent, &[&py(), &reader, &link_s], &home, "credid", || {});
    assert_eq!((out.as_str(), status.signal()), ("", Some(libc::SIGKILL)), "{status}");

    // 2. A bind mount of ~/.ssh elsewhere, in a private mount namespace.
    let mnt = scratch_dir("killid-mnt").canonicalize().unwrap();
    let cmd = format!(
        "mount --bind {} {} && exec {} {reader} {}/id_rsa",
        home.join(".ssh").display(),
        mnt.display(),
        py(),
        mnt.display()
    );
    let (out, status) = run_watched(
        &agent,
        &[
            "/usr/bin/unshare",
            "-m",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            &cmd,
        ],
        &home,
        "credid",
        || {},
    );
    assert_eq!((out.as_str(), status.signal()), ("", Some(libc::SIGKILL)), "{status}");

    // 3. ~/.ssh renamed away after the agent found the key.
    let moved = home.join("old-keys/id_rsa").to_string_lossy().into_owned();
    let (out, status) = run_watched(&agent, &[&py(), &reader, &moved], &home, "credid", || {
        std::fs::rename(home.join(".ssh"), home.join("old-keys")).unwrap();
    });
    assert_eq!((out.as_str(), status.signal()), ("", Some(libc::SIGKILL)), "{status}");

    let ev = agent.wait_events("three kills", |ev| by_rule(ev, "credid", "enforce.denied").len() >= 3);
    let targets: Vec<String> = by_rule(&ev, "credid", "enforce.denied")
        .iter()
        .map(|a| a["evidence"]["target"].as_str().unwrap_or("").to_owned())
        .collect();
    for t in [link_s.clone(), format!("{}/id_rsa", mnt.display()), moved.clone()] {
        assert!(targets.contains(&t), "{t} not in {targets:?}");
    }
    assert!(agent.stop().success());

    // Audit mode, for any watched process: the credential alert names the
    // file it is, and says the kill layer would have blocked it.
    std::fs::rename(home.join("old-keys"), home.join(".ssh")).unwrap();
    let aud = script(&dir, "cred_alias_aud.py", READ_ARG);
    let m = json!({"name": "credia", "mode": "audit", "read": [format!("{}/**", declared.display())]});
    let d = manifest("killid-aud", "cred_alias_aud.py", m);
    let agent = agent_with("killid-aud", &d, &[]);
    let (out, status) = run_watched(&agent, &[&py(), &aud, &link_s], &home, "credia", || {});
    assert_eq!(out, "READ:FAKE-PRIVATE-KEY-MATERIAL\n");
    assert!(status.success());
    let ev = agent.wait_events("cred.ssh", |ev| !by_rule(ev, "credia", "cred.ssh").is_empty());
    let a = by_rule(&ev, "credia", "cred.ssh")[0];
    let key = home.join(".ssh/id_rsa").to_string_lossy().into_owned();
    assert_eq!(a["evidence"]["same_file_as"].as_str(), Some(key.as_str()), "{a}");
    assert_eq!(a["evidence"]["path"].as_str(), Some(link_s.as_str()), "{a}");
    assert_eq!(
        (a["would_block"].as_bool(), a["layer"].as_str()),
        (Some(true), Some("kill")),
        "{a}"
    );
    assert!(agent.stop().success());
}
