//! The configuration file: bad files stop the agent with an error naming the
//! field, before anything is loaded; defaults need no file at all.

use std::process::Command;

use mcpwatch_tests::{fixtures::*, *};

fn agent_with(config: &std::path::Path) -> std::process::Output {
    output(
        Command::new(bin())
            .arg("agent")
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(config.with_extension("sock")),
    )
}

#[test]
fn invalid_config_names_the_field_and_exits_non_zero() {
    let dir = scratch_dir("config");
    let cases = [
        ("typo.toml", "[metrics]\nadress = \"127.0.0.1:9464\"\n", "adress"),
        (
            "sink.toml",
            // A host name is fine (resolved at connect); one without a port is not.
            "[[sinks]]\nname = \"siem\"\nsyslog = { transport = \"tcp\", address = \"siem.example.com\" }\n",
            "sinks[0].syslog.address",
        ),
        (
            "auth.toml",
            "[[sinks]]\nname = \"h\"\nwebhook = { url = \"http://127.0.0.1:1/\", auth = { value_env = \"X\", value_file = \"/y\" } }\n",
            "sinks[0].webhook.auth",
        ),
    ];
    for (file, text, field) in cases {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let out = agent_with(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: {err}");
        assert!(err.contains(field), "{file}: error should name `{field}`: {err}");
        assert!(
            err.contains(&*path.to_string_lossy()),
            "{file}: error should name the file: {err}"
        );
    }
    let missing = dir.join("missing.toml");
    let out = agent_with(&missing);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn a_busy_metrics_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = scratch_dir("config-port");
    let out = output(
        Command::new(bin())
            .arg("agent")
            .arg("--metrics-address")
            .arg(&addr)
            .arg("--socket")
            .arg(dir.join("c.sock")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&addr) && err.contains("metrics"), "{err}");
}

/// A burst of alerts larger than a sink's queue (4096) arrives whole: the
/// event loop gives the sink tasks their turn instead of dropping.
#[test]
fn an_alert_burst_larger_than_a_sink_queue_loses_nothing() {
    let agent = Agent::start_with_config(
        "burst",
        "state_dir = \"{dir}/state\"\n\
         [metrics]\naddress = \"127.0.0.1:0\"\n\
         [policy]\nalert_distinct_max = 1000000\n\
         [[sinks]]\nname = \"local\"\nfile = { path = \"{dir}/alerts.jsonl\" }\n",
        &["--no-user-host-configs"],
    );
    let dir = scratch_dir("burst-files");
    let n = 6000;
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i}")), b"").unwrap();
    }
    // One watched process opening 6,000 undeclared files as fast as it can.
    let code = format!(
        "import os\nfor i in range({n}):\n    os.close(os.open('{}/f%d' % i, os.O_RDONLY))\n",
        dir.display()
    );
    agent.run_python("burst", &code);
    let alerts = agent.dir.join("alerts.jsonl");
    let prefix = format!("{}/f", dir.display());
    // Distinct files named by the alerts.
    let ours = || distinct_numbered(&alerts, &prefix);
    let got = wait_for(
        "every alert in the sink",
        std::time::Duration::from_secs(60),
        || {
            let c = ours();
            (c >= n).then_some(c)
        },
        || format!("{} of {n} alerts\n{}", ours(), agent.log()),
    );
    assert_eq!(got, n);
    assert!(!agent.log().contains("dropped"), "{}", agent.log());
}
