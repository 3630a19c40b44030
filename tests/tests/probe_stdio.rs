//! The stdio probe: every byte a wrapped server reads and writes on its wire
//! is captured. A real piped server under a real agent.

use mcpwatch_tests::*;

#[test]
fn stdio_of_a_piped_server_is_captured_with_offsets() {
    let agent = Agent::start("stdio", &[]);
    let py = python();
    let mut child = agent
        .wrap(
            "stdio",
            &[
                py.to_str().unwrap(),
                "-c",
                "import sys\nfor l in sys.stdin: sys.stdout.write(l.upper())",
            ],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let msg = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n".repeat(2000);
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(msg.as_bytes()).unwrap();
    }
    let out = read_stdout(&mut child);
    assert!(child.wait().unwrap().success());
    assert_eq!(out.len(), msg.len());
    let _ = agent.server_events("stdio");
    let captured = agent.status()["stdio_bytes"].as_u64().unwrap();
    assert_eq!(
        captured,
        2 * msg.len() as u64,
        "stdin read + stdout written, every byte"
    );
    assert!(agent.stop().success());
}
