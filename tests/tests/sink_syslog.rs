//! Alerts to a SIEM over syslog: a real rsyslogd (the Debian package's, with a
//! private config, work directory, pid file and ports) receives RFC 5424
//! messages from the agent over TCP (octet-counted), UDP and a Unix socket,
//! as JSON (ECS) and CEF; what it parsed gives the original alerts back.

use std::{
    collections::HashMap,
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::Path,
    process::Command,
    time::Duration,
};

use mcpwatch::{
    alerts::Alert,
    output::format::{cef, ecs},
};
use mcpwatch_tests::*;
use serde_json::Value;

/// rsyslog writes each message's parsed RFC 5424 fields, tab-separated.
const TEMPLATE: &str = "%inputname%\\t%pri%\\t%protocol-version%\\t%hostname%\\t%app-name%\\t%msgid%\\t\
                        %structured-data%\\t%msg%\\n";

fn start_rsyslog(dir: &Path, tcp: u16, udp: u16, unix: &Path) -> Daemon {
    start_rsyslog_on(dir, "127.0.0.1", tcp, udp, unix)
}

fn start_rsyslog_on(dir: &Path, ip: &str, tcp: u16, udp: u16, unix: &Path) -> Daemon {
    let out = dir.join("received.log");
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}" maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
module(load="imuxsock" SysSock.Use="off")
template(name="fields" type="string" string="{TEMPLATE}")
ruleset(name="alerts") {{ action(type="omfile" file="{out}" template="fields") }}
input(type="imtcp" port="{tcp}" address="{ip}" ruleset="alerts")
input(type="imudp" port="{udp}" address="{ip}" ruleset="alerts")
input(type="imuxsock" socket="{unix}" ruleset="alerts" useSpecialParser="off" parseHostname="on")
"#,
            dir = dir.display(),
            out = out.display(),
            unix = unix.display(),
        ),
    )
    .expect("rsyslog config");
    let mut d = Daemon::spawn(
        "rsyslogd",
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid")),
        dir.join("rsyslogd.log"),
    );
    wait_for(
        "rsyslogd to listen",
        Duration::from_secs(10),
        || {
            d.assert_running();
            (std::net::TcpStream::connect((ip, tcp)).is_ok() && unix.exists()).then_some(())
        },
        || std::fs::read_to_string(dir.join("rsyslogd.log")).unwrap_or_default(),
    );
    d
}

#[test]
fn rsyslog_receives_rfc5424_alerts_over_tcp_udp_and_unix_that_parse_back() {
    let dir = scratch_dir("rsyslog");
    let (tcp, udp) = (free_port(), free_udp_port());
    let unix = dir.join("log.sock");
    let mut rsyslog = start_rsyslog(&dir, tcp, udp, &unix);
    let agent = Agent::start_with_config(
        "syslog",
        &format!(
            "spool_dir = \"{{dir}}/spool\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
             [[sinks]]\nname = \"tcp-json\"\nsyslog = {{ transport = \"tcp\", address = \"127.0.0.1:{tcp}\" }}\n\
             [[sinks]]\nname = \"udp-cef\"\nsyslog = {{ transport = \"udp\", address = \"127.0.0.1:{udp}\", format = \"cef\" }}\n\
             [[sinks]]\nname = \"unix-json\"\nsyslog = {{ transport = \"unix\", address = \"{}\" }}\n",
            unix.display()
        ),
        &[],
    );
    let ids: Vec<String> = (0..3).map(|_| agent.test_alert()).collect();
    let received = dir.join("received.log");
    let lines: Vec<Vec<String>> = wait_for(
        "9 messages in rsyslog",
        Duration::from_secs(20),
        || {
            rsyslog.assert_running();
            let text = std::fs::read_to_string(&received).unwrap_or_default();
            let lines: Vec<Vec<String>> = text
                .lines()
                .map(|l| l.split('\t').map(str::to_owned).collect())
                .collect();
            (lines.len() >= 9).then_some(lines)
        },
        || {
            let rs = std::fs::read_to_string(dir.join("rsyslogd.log")).unwrap_or_default();
            format!("{rs}\n{}", agent.log())
        },
    );
    assert_eq!(lines.len(), 9);

    // The original alerts, as the agent wrote them in its event stream.
    let originals: HashMap<String, Alert> = of_kind(&agent.events(), "alert")
        .into_iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().unwrap().remove("kind");
            let a: Alert = serde_json::from_value(e).expect("alert line");
            (a.id.clone(), a)
        })
        .collect();
    assert_eq!(originals.len(), 3);

    let mut per_input: HashMap<&str, Vec<String>> = HashMap::new();
    for f in &lines {
        let [input, pri, version, host, app, msgid, sd, msg] = &f[..] else {
            panic!("unexpected line {f:?}");
        };
        // facility 13 (log audit) * 8 + severity 6 (info)
        assert_eq!(pri, "110", "{f:?}");
        assert_eq!(version, "1");
        assert_eq!(app, "mcpwatch");
        assert_eq!(msgid, "alert");
        let id = match input.as_str() {
            "imtcp" | "imuxsock" => {
                let doc: Value = serde_json::from_str(msg).unwrap_or_else(|e| panic!("{e}: {msg}"));
                let alert = ecs::from_ecs(&doc).expect("an ECS alert");
                let original = originals.get(&alert.id).expect("a known alert");
                assert_eq!(&alert, original, "parsed back to the original");
                assert_eq!(host, &original.host);
                alert.id
            }
            "imudp" => {
                let parsed = cef::parse(msg).unwrap_or_else(|| panic!("not CEF: {msg}"));
                let header = &parsed.header;
                assert_eq!(header[0], "CEF:0");
                assert_eq!(header[1..3], ["mcpwatch", "mcpwatch"]);
                assert_eq!(header[4], "agent.test");
                assert_eq!(header[6], "1");
                let get = |k: &str| parsed.get(k).map(str::to_owned);
                let id = get("externalId").expect("externalId");
                let original = originals.get(&id).expect("a known alert");
                assert_eq!(header[5], original.summary);
                assert_eq!(get("msg").as_deref(), Some(original.summary.as_str()));
                assert_eq!(get("spid"), Some(original.pid.to_string()));
                assert_eq!(get("cs3"), Some(original.evidence.to_string()));
                id
            }
            other => panic!("unexpected input {other}"),
        };
        assert!(
            sd.starts_with("[mcpwatch@32473 ")
                && sd.contains(&format!("id=\"{id}\""))
                && sd.contains("rule=\"agent.test\""),
            "the default enterprise number: {sd}"
        );
        per_input.entry(input.as_str()).or_default().push(id);
    }
    for input in ["imtcp", "imudp", "imuxsock"] {
        assert_eq!(per_input[input], ids, "{input}: every alert once, in order");
    }
    agent.stop();
}

/// A real policy alert's file and peer reach rsyslog under CEF's own keys
/// (`filePath`, `dst`, `dpt`), with `act`, `cat`, `sproc` and `suser`,
/// not only inside the `cs3` evidence JSON.
#[test]
fn rsyslog_receives_cef_with_the_file_and_peer_under_cefs_own_keys() {
    let dir = scratch_dir("rsyslog-cef");
    let (tcp, udp) = (free_port(), free_udp_port());
    let mut rsyslog = start_rsyslog(&dir, tcp, udp, &dir.join("log.sock"));
    let agent = Agent::start_with_config(
        "syslogcef",
        &format!(
            "spool_dir = \"{{dir}}/spool\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
             [[sinks]]\nname = \"udp-cef\"\nsyslog = {{ transport = \"udp\", address = \"127.0.0.1:{udp}\", format = \"cef\", enterprise_number = 64999 }}\n"
        ),
        &[],
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    agent.run_python(
        "cefsrv",
        &format!(
            r#"
import os, socket
try:
    open(os.path.expanduser("~/.ssh/id_rsa_mcpwatch_cef"))
except OSError:
    pass
socket.create_connection(("127.0.0.1", {port})).close()
"#
        ),
    );
    let received = dir.join("received.log");
    let wanted = ["cred.ssh", "net.connect_undeclared"];
    let cef_of = |text: &str, rule: &str| {
        text.lines()
            .filter_map(|l| {
                // The organisation's own enterprise number in the SD-ID.
                let sd = l.split('\t').nth(6)?;
                assert!(sd.starts_with("[mcpwatch@64999 "), "{l}");
                cef::parse(l.split('\t').nth(7)?)
            })
            .find(|p| p.header[4] == rule)
    };
    let text = wait_for(
        "the credential and connect alerts in rsyslog",
        Duration::from_secs(20),
        || {
            rsyslog.assert_running();
            let text = std::fs::read_to_string(&received).unwrap_or_default();
            wanted.iter().all(|r| cef_of(&text, r).is_some()).then_some(text)
        },
        || {
            format!(
                "{}\n{}",
                std::fs::read_to_string(&received).unwrap_or_default(),
                agent.log()
            )
        },
    );
    let cred = cef_of(&text, "cred.ssh").unwrap();
    let path = cred.get("filePath").expect("filePath");
    assert!(path.ends_with("/.ssh/id_rsa_mcpwatch_cef"), "{cred:?}");
    assert_eq!(cred.get("cat"), Some("cred"));
    // The same decision as the alert in the event stream (audit mode marks
    // what enforcement would have blocked).
    let events = agent.events();
    let original = alerts(&events, Some("cefsrv"))
        .into_iter()
        .find(|a| a["rule"] == "cred.ssh")
        .expect("the cred.ssh alert in the event stream");
    let act = if original["would_block"] == true {
        "would_block"
    } else {
        "alert"
    };
    assert_eq!(cred.get("act"), Some(act), "{original}");
    assert!(cred.get("sproc").is_some_and(|p| p.contains("python")), "{cred:?}");
    assert_eq!(cred.get("suser"), Some("root"));
    let conn = cef_of(&text, "net.connect_undeclared").unwrap();
    assert_eq!(conn.get("dst"), Some("127.0.0.1"), "{conn:?}");
    assert_eq!(conn.get("dpt"), Some(port.to_string().as_str()), "{conn:?}");
    assert_eq!(conn.get("cat"), Some("net"));
    agent.stop();
}

/// Ids of the `agent.test` alerts an rsyslogd wrote so far.
fn received_ids(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("received.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let doc: Value = serde_json::from_str(l.split('\t').nth(7)?).ok()?;
            Some(ecs::from_ecs(&doc).ok()?.id)
        })
        .collect()
}

/// A syslog target given as a host name is resolved when the agent connects
/// and again after a failure: when the name moves to another address (here
/// in the agent's own /etc/hosts, bind-mounted in a private mount namespace)
/// and the old receiver goes away, the next alert reaches the new one.
#[test]
fn a_syslog_host_name_is_resolved_again_after_a_failure_and_followed() {
    let dir = scratch_dir("rsyslog-name");
    let (old_dir, new_dir) = (dir.join("old"), dir.join("new"));
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    // The same port on two loopback addresses: only the name's address moves.
    let (tcp, udp) = (free_port(), free_udp_port());
    let old = start_rsyslog_on(&old_dir, "127.0.0.1", tcp, udp, &old_dir.join("log.sock"));
    let mut new = start_rsyslog_on(&new_dir, "127.0.0.2", tcp, udp, &new_dir.join("log.sock"));
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 siem.mcpwatch.test\n").unwrap();
    let hosts_c = CString::new(hosts.as_os_str().as_bytes()).unwrap();
    let agent = Agent::start_with_config_prepared(
        "syslogname",
        &format!(
            "spool_dir = \"{{dir}}/spool\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
             [[sinks]]\nname = \"by-name\"\nretry = {{ initial_backoff_ms = 50, max_backoff_ms = 200 }}\n\
             syslog = {{ transport = \"tcp\", address = \"siem.mcpwatch.test:{tcp}\" }}\n"
        ),
        &[],
        |cmd| {
            // SAFETY: only async-signal-safe system calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let none = std::ptr::null();
                    if libc::unshare(libc::CLONE_NEWNS) != 0
                        || libc::mount(
                            c"none".as_ptr(),
                            c"/".as_ptr(),
                            none,
                            libc::MS_REC | libc::MS_PRIVATE,
                            none.cast(),
                        ) != 0
                        || libc::mount(
                            hosts_c.as_ptr(),
                            c"/etc/hosts".as_ptr(),
                            none,
                            libc::MS_BIND,
                            none.cast(),
                        ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                })
            };
        },
    );
    let first = agent.test_alert();
    wait_for(
        "the first alert at the name's first address",
        Duration::from_secs(20),
        || received_ids(&old_dir).contains(&first).then_some(()),
        || agent.log(),
    );
    // The name moves (rewritten in place: the bind mount keeps the inode),
    // and the receiver at the old address goes away.
    std::fs::write(&hosts, "127.0.0.2 siem.mcpwatch.test\n").unwrap();
    drop(old);
    let second = agent.test_alert();
    wait_for(
        "the second alert at the name's new address",
        Duration::from_secs(20),
        || {
            new.assert_running();
            received_ids(&new_dir).contains(&second).then_some(())
        },
        || agent.log(),
    );
    assert_eq!(received_ids(&old_dir), [first]);
    assert_eq!(received_ids(&new_dir), [second]);
    agent.stop();
}
