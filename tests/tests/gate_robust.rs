//! The gate under rough input: a garbage line from either side, a 10 MB
//! result, a server that dies mid-message, a client that closes its end.
//! Each run is made twice, through the gate and straight to the server
//! (`tests/mcp/servers/recorder.py`), and the host must see the same thing.
//! No agent runs: the gate decides without one (its decisions go to its
//! standard error), and the runs stay quick.

use std::{
    io::{Read as _, Write as _},
    process::{Child, Command, Stdio},
};

use mcpwatch_tests::{mcp::server_script, *};
use serde_json::Value;

fn recorder(name: &str, exit: &str) -> Vec<String> {
    let d = scratch_dir(&format!("{name}-record"));
    vec![
        python().to_string_lossy().into_owned(),
        server_script("recorder.py"),
        d.to_string_lossy().into_owned(),
        exit.to_owned(),
    ]
}

fn spawn(args: &[String]) -> Child {
    Command::new(&args[0])
        .args(&args[1..])
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Writes `input`, closes stdin, reads everything: (stdout, exit code).
fn run(args: &[String], input: &[u8]) -> (Vec<u8>, Option<i32>) {
    let mut child = spawn(args);
    child.stdin.take().unwrap().write_all(input).unwrap();
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    (out, child.wait().unwrap().code())
}

/// The server through a gate with no agent, and the server alone.
fn both(name: &str, exit: &str) -> (Vec<String>, Vec<String>) {
    let direct = recorder(name, exit);
    // Its own state directory and syslog socket: nothing of the host's is read or written.
    let dir = scratch_dir(&format!("{name}-gate"));
    let config = dir.join("mcpwatch.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[wrapper]\nsyslog_socket = {:?}\n",
            dir.join("state"),
            dir.join("log.sock")
        ),
    )
    .unwrap();
    let mut gated: Vec<String> = [
        bin().to_string_lossy().as_ref(),
        "exec",
        "--gate",
        "--server",
        name,
        "--socket",
        &dir.join("no-agent.sock").to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    gated.extend(direct.iter().cloned());
    (gated, direct)
}

fn lines(out: &[u8]) -> Vec<Value> {
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(l).into())))
        .collect()
}

#[test]
fn garbage_from_either_side_is_answered_or_passed_and_the_session_goes_on() {
    let (gated, direct) = both("garbage", "0");
    let input = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n\
this is not json\n\
{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"x/garbage\"}\n\
{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n";
    let (g, gcode) = run(&gated, input);
    let (d, dcode) = run(&direct, input);
    assert_eq!((gcode, dcode), (Some(0), Some(0)));
    // The host's garbage: a parse error with a null id either way (the
    // gate's own, naming itself, answered at once instead of in turn).
    let gate_error = |v: &Value| v["error"]["code"] == -32700 && v["id"].is_null();
    let (g, d) = (lines(&g), lines(&d));
    let refusal = g.iter().find(|v| gate_error(v)).unwrap_or_else(|| panic!("{g:?}"));
    assert!(
        refusal["error"]["message"].as_str().unwrap().contains("mcpwatch gate"),
        "{refusal}"
    );
    assert_eq!(d.iter().filter(|v| gate_error(v)).count(), 1, "{d:?}");
    // Everything else (the server's garbage line included) as the server wrote it, in order.
    let rest = |l: &[Value]| -> Vec<Value> { l.iter().filter(|v| !gate_error(v)).cloned().collect() };
    assert_eq!(rest(&g), rest(&d));
    let g = rest(&g);
    assert_eq!(g[1], Value::String("garbage from the server".into()), "{g:?}");
    assert_eq!(g.last().unwrap()["params"]["data"], "bye", "{g:?}");
}

/// Resident set high-water mark of a live process, in kB.
fn vm_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_10_mb_result_passes_byte_for_byte_streamed_not_held() {
    let (gated, direct) = both("big", "0");
    const SIZE: usize = 10 << 20;
    let ping = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
    let big = format!("{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"x/big\",\"params\":{{\"size\":{SIZE}}}}}\n");
    let mut outs = Vec::new();
    for (args, is_gate) in [(&gated, true), (&direct, false)] {
        let mut child = spawn(args);
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        stdin.write_all(ping).unwrap();
        let mut out = vec![0u8; 4096];
        let n = stdout.read(&mut out).unwrap();
        out.truncate(n);
        // The gate is up and has relayed one message: its footprint before the big one.
        let before = vm_hwm_kb(child.id());
        stdin.write_all(big.as_bytes()).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut newlines = out.iter().filter(|b| **b == b'\n').count();
        while newlines < 2 {
            let n = stdout.read(&mut buf).unwrap();
            assert!(n > 0, "ended early");
            newlines += buf[..n].iter().filter(|b| **b == b'\n').count();
            out.extend_from_slice(&buf[..n]);
        }
        if is_gate {
            let grew = vm_hwm_kb(child.id()).saturating_sub(before);
            // Streamed: at most the hold limit (1 MiB) and a read buffer, never 10 MB.
            assert!(grew < 4 << 10, "the gate's peak RSS grew by {grew} kB for a 10 MB line");
        }
        drop(stdin);
        stdout.read_to_end(&mut out).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
        outs.push(out);
    }
    assert!(outs[0].len() > SIZE);
    assert!(outs[0] == outs[1], "the gated bytes differ from the direct ones");
}

#[test]
fn a_server_that_dies_mid_message_leaves_the_host_what_it_wrote_and_its_status() {
    let (gated, direct) = both("die", "0");
    let input =
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"x/die\"}\n";
    // stdin stays open: the server's death alone must end the run.
    let mut res = Vec::new();
    for args in [&gated, &direct] {
        let mut child = spawn(args);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        let mut out = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        let status = wait_for("exit", PATIENCE, || child.try_wait().unwrap(), String::new);
        res.push((out, status.code()));
        drop(stdin);
    }
    assert_eq!(res[0].1, Some(3));
    assert!(
        res[0].0.ends_with(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"resu"),
        "{:?}",
        String::from_utf8_lossy(&res[0].0)
    );
    assert_eq!(res[0], res[1]);
}

#[test]
fn a_client_that_closes_stdin_ends_the_server_as_without_the_gate() {
    let (gated, direct) = both("eof", "5");
    // Mid-line: the unterminated last message is still delivered.
    let input =
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}";
    let g = run(&gated, input);
    let d = run(&direct, input);
    assert_eq!(g.1, Some(5));
    assert_eq!(lines(&g.0).last().unwrap()["params"]["data"], "bye");
    assert_eq!(g, d);
}

#[test]
fn every_decision_is_reported_before_the_gate_exits() {
    let (gated, _) = both("audit-exit", "0");
    let mut input = Vec::new();
    for i in 0..3000 {
        input.extend_from_slice(
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"tools/call\",\"params\":{{\"name\":\"rm\"}}}}\n")
                .as_bytes(),
        );
    }
    let mut child = Command::new(&gated[0])
        .args(&gated[1..])
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Written while the answers are read: neither pipe fills up.
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // No agent: each refusal is written to the gate's standard error, none lost at exit.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unreported = |what: &str| {
        stderr
            .lines()
            .filter(|l| l.contains("gate decision not reported to the agent") && l.contains(what))
            .count()
    };
    assert_eq!(unreported("\"decision\":\"call\""), 3000, "{stderr}");
    // The gate listed the tools itself before the first call (none listed yet).
    assert_eq!(unreported("\"decision\":\"withheld\""), 1, "{stderr}");
    assert_eq!(
        lines(&out.stdout)
            .iter()
            .filter(|v| v["error"]["code"] == -32001)
            .count(),
        3000
    );
}
