//! The rule catalogue: every alert mcpwatch raises (policy, MCP and the
//! agent's own), with its id, severity and MITRE technique (ATT&CK, or ATLAS
//! for attacks on the model itself). The README's table lists the same.

use crate::alerts::Severity;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub mitre: Option<(&'static str, &'static str)>,
}

pub type RuleId = &'static Rule;

/// A rule is written as its id.
impl serde::Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id)
    }
}

macro_rules! rule {
    ($name:ident, $id:literal, $sev:ident, $mitre:expr) => {
        pub static $name: Rule = Rule {
            id: $id,
            severity: Severity::$sev,
            mitre: $mitre,
        };
    };
}

rule!(SERVER_UNDECLARED, "server.undeclared", Low, None);
rule!(MANIFEST_INVALID, "policy.manifest_invalid", Medium, None);
rule!(
    EXEC_UNDECLARED,
    "exec.undeclared",
    Medium,
    Some(("T1059", "Command and Scripting Interpreter"))
);
rule!(
    EXEC_SHELL,
    "exec.shell",
    High,
    Some(("T1059.004", "Command and Scripting Interpreter: Unix Shell"))
);
rule!(
    EXEC_REVERSE_SHELL,
    "exec.reverse_shell",
    Critical,
    Some(("T1059.004", "Command and Scripting Interpreter: Unix Shell"))
);
rule!(
    EXEC_WRITE_THEN_EXEC,
    "exec.write_then_exec",
    High,
    Some(("T1105", "Ingress Tool Transfer"))
);
rule!(
    EXEC_FILELESS,
    "exec.fileless",
    Critical,
    Some(("T1620", "Reflective Code Loading"))
);
rule!(
    FILE_READ_UNDECLARED,
    "file.read_undeclared",
    Medium,
    Some(("T1005", "Data from Local System"))
);
rule!(FILE_WRITE_UNDECLARED, "file.write_undeclared", Medium, None);
rule!(FILE_PATH_UNKNOWN, "file.path_unknown", Medium, None);
rule!(
    NET_CONNECT_UNDECLARED,
    "net.connect_undeclared",
    Medium,
    Some(("T1071", "Application Layer Protocol"))
);
rule!(NET_LISTEN_UNDECLARED, "net.listen_undeclared", Medium, None);
rule!(NET_LISTEN_EXPOSED, "net.listen_exposed", High, None);
rule!(NET_ACCEPT_UNDECLARED, "net.accept_undeclared", Medium, None);
// A tool's call did what the server may do, but the manifest's
// `tools.<name>` narrowing does not grant that tool.
rule!(
    TOOL_READ_OUTSIDE_GRANT,
    "tool.read_outside_grant",
    Medium,
    Some(("T1005", "Data from Local System"))
);
rule!(TOOL_WRITE_OUTSIDE_GRANT, "tool.write_outside_grant", Medium, None);
rule!(
    TOOL_EXEC_OUTSIDE_GRANT,
    "tool.exec_outside_grant",
    Medium,
    Some(("T1059", "Command and Scripting Interpreter"))
);
rule!(
    TOOL_NET_OUTSIDE_GRANT,
    "tool.net_outside_grant",
    Medium,
    Some(("T1071", "Application Layer Protocol"))
);
rule!(
    PROC_PTRACE,
    "proc.ptrace",
    Critical,
    Some(("T1055.008", "Process Injection: Ptrace System Calls"))
);
rule!(
    PROC_MEMORY,
    "proc.memory",
    Critical,
    Some(("T1003.007", "OS Credential Dumping: Proc Filesystem"))
);
rule!(
    PROC_ENVIRON,
    "proc.environ",
    High,
    Some(("T1552", "Unsecured Credentials"))
);
rule!(PROC_MAPS, "proc.maps", Medium, Some(("T1057", "Process Discovery")));
rule!(
    PRIV_SETID,
    "priv.setid",
    High,
    Some(("T1548", "Abuse Elevation Control Mechanism"))
);
rule!(
    PRIV_KERNEL_MODULE,
    "priv.kernel_module",
    Critical,
    Some((
        "T1547.006",
        "Boot or Logon Autostart Execution: Kernel Modules and Extensions"
    ))
);
rule!(PRIV_BPF, "priv.bpf", High, Some(("T1014", "Rootkit")));
rule!(PRIV_MOUNT, "priv.mount", High, Some(("T1611", "Escape to Host")));
rule!(
    PROC_FD_STEAL,
    "proc.fd_steal",
    Critical,
    Some(("T1055", "Process Injection"))
);
rule!(
    EVASION_COMPAT_SYSCALL,
    "evasion.compat_syscall",
    High,
    Some(("T1562.001", "Impair Defenses: Disable or Modify Tools"))
);
rule!(
    EVASION_IO_URING,
    "evasion.io_uring",
    Medium,
    Some(("T1562", "Impair Defenses"))
);
rule!(
    EVASION_IO_URING_OP,
    "evasion.io_uring_op",
    Medium,
    Some(("T1562", "Impair Defenses"))
);

rule!(
    CRED_SSH,
    "cred.ssh",
    High,
    Some(("T1552.004", "Unsecured Credentials: Private Keys"))
);
rule!(
    CRED_TLS_KEY,
    "cred.tls_key",
    High,
    Some(("T1552.004", "Unsecured Credentials: Private Keys"))
);
rule!(
    CRED_CLOUD,
    "cred.cloud",
    High,
    Some(("T1552.001", "Unsecured Credentials: Credentials In Files"))
);
rule!(
    CRED_KUBE,
    "cred.kube",
    High,
    Some(("T1552.001", "Unsecured Credentials: Credentials In Files"))
);
rule!(
    CRED_DOTENV,
    "cred.dotenv",
    High,
    Some(("T1552.001", "Unsecured Credentials: Credentials In Files"))
);
rule!(
    CRED_NETRC,
    "cred.netrc",
    High,
    Some(("T1552.001", "Unsecured Credentials: Credentials In Files"))
);
rule!(
    CRED_NPMRC,
    "cred.npmrc",
    High,
    Some(("T1552.001", "Unsecured Credentials: Credentials In Files"))
);
rule!(
    CRED_PYPIRC,
    "cred.pypirc",
    High,
    Some(("T1552.001", "Unsecured Credentials: Credentials In Files"))
);
rule!(
    CRED_DOCKER,
    "cred.docker",
    High,
    Some(("T1552.001", "Unsecured Credentials: Credentials In Files"))
);
rule!(
    CRED_GIT,
    "cred.git",
    High,
    Some(("T1552.001", "Unsecured Credentials: Credentials In Files"))
);
rule!(
    CRED_BROWSER,
    "cred.browser",
    High,
    Some((
        "T1555.003",
        "Credentials from Password Stores: Credentials from Web Browsers"
    ))
);
rule!(
    CRED_KEYRING,
    "cred.keyring",
    High,
    Some(("T1555", "Credentials from Password Stores"))
);
rule!(
    CRED_SHELL_HISTORY,
    "cred.shell_history",
    High,
    Some(("T1552.003", "Unsecured Credentials: Bash History"))
);
rule!(
    CRED_SHADOW,
    "cred.shadow",
    High,
    Some(("T1003.008", "OS Credential Dumping: /etc/passwd and /etc/shadow"))
);

// The MCP conversation: poisoned tool descriptions and results (MITRE ATLAS:
// prompt injection reaches the model through the tool's text).
rule!(
    MCP_POISON_HIDDEN_INSTRUCTION,
    "mcp.poison.hidden_instruction",
    High,
    Some(("AML.T0051.001", "LLM Prompt Injection: Indirect"))
);
rule!(
    MCP_POISON_MODEL_DIRECTIVE,
    "mcp.poison.model_directive",
    Medium,
    Some(("AML.T0051.001", "LLM Prompt Injection: Indirect"))
);
rule!(
    MCP_POISON_INVISIBLE_UNICODE,
    "mcp.poison.invisible_unicode",
    High,
    Some(("AML.T0051.001", "LLM Prompt Injection: Indirect"))
);
rule!(
    MCP_POISON_LONG_DESCRIPTION,
    "mcp.poison.long_description",
    Low,
    Some(("AML.T0051.001", "LLM Prompt Injection: Indirect"))
);
rule!(
    MCP_POISON_CREDENTIAL_REFERENCE,
    "mcp.poison.credential_reference",
    High,
    Some(("AML.T0051.001", "LLM Prompt Injection: Indirect"))
);
rule!(
    MCP_POISON_TOOL_SHADOWING,
    "mcp.poison.tool_shadowing",
    Medium,
    Some(("AML.T0051.001", "LLM Prompt Injection: Indirect"))
);
rule!(
    MCP_POISON_SECRECY_DIRECTIVE,
    "mcp.poison.secrecy_directive",
    High,
    Some(("AML.T0051.001", "LLM Prompt Injection: Indirect"))
);
rule!(
    MCP_POISON_UNRELATED_ACTION,
    "mcp.poison.unrelated_action",
    High,
    Some(("AML.T0051.001", "LLM Prompt Injection: Indirect"))
);
// Secrets on the wire: a credential in a tool's result reaches the model
// (and whatever it talks to); one in a call's arguments leaves through the
// tool.
rule!(
    MCP_SECRET_IN_RESULT,
    "mcp.secret_in_result",
    High,
    Some(("T1552", "Unsecured Credentials"))
);
rule!(
    MCP_SECRET_IN_ARGUMENTS,
    "mcp.secret_in_arguments",
    High,
    Some(("AML.T0057", "LLM Data Leakage"))
);
// Rug pulls: a tool's definition differs from its pin (a supply-chain change
// after approval).
rule!(
    MCP_RUG_PULL_CHANGED,
    "mcp.rug_pull.changed",
    High,
    Some(("T1195.002", "Supply Chain Compromise: Compromise Software Supply Chain"))
);
rule!(
    MCP_RUG_PULL_ADDED,
    "mcp.rug_pull.added",
    Medium,
    Some(("T1195.002", "Supply Chain Compromise: Compromise Software Supply Chain"))
);
rule!(
    MCP_RUG_PULL_REMOVED,
    "mcp.rug_pull.removed",
    Low,
    Some(("T1195.002", "Supply Chain Compromise: Compromise Software Supply Chain"))
);
rule!(
    MCP_RUG_PULL_RENAMED,
    "mcp.rug_pull.renamed",
    High,
    Some(("T1195.002", "Supply Chain Compromise: Compromise Software Supply Chain"))
);
// The gate (`mcpwatch exec` relaying a gated server): what it refused or
// let through unapproved. Calling a tool nobody approved is the plugin
// compromise ATLAS describes; a refused unreadable message has no technique.
rule!(
    GATE_DENIED,
    "gate.denied",
    Medium,
    Some(("AML.T0053", "LLM Plugin Compromise"))
);
rule!(
    GATE_WITHHELD,
    "gate.withheld",
    Medium,
    Some(("AML.T0053", "LLM Plugin Compromise"))
);
rule!(
    GATE_UNLISTED_ALLOWED,
    "gate.unlisted_allowed",
    Low,
    Some(("AML.T0053", "LLM Plugin Compromise"))
);
rule!(GATE_REFUSED_MESSAGE, "gate.refused_message", Medium, None);
// The agent's own: proves the delivery path (`mcpwatch test-alert`).
rule!(AGENT_TEST, "agent.test", Info, None);
// The agent's own: it is alive and watching (`heartbeat_s`), so a SIEM can
// tell a quiet host from a silenced agent.
rule!(AGENT_HEARTBEAT, "agent.heartbeat", Info, None);
// The agent's own: records were lost (a full ring, a probe's drop, an
// undecodable record), folded per interval; what was lost is unseen.
rule!(
    AGENT_EVENT_LOSS,
    "agent.event_loss",
    High,
    Some(("T1562.001", "Impair Defenses: Disable or Modify Tools"))
);
// The agent's own: a server a previous agent watched was found again after a
// restart; what it did in between was not seen.
rule!(
    AGENT_WATCH_GAP,
    "agent.watch_gap",
    Medium,
    Some(("T1562.001", "Impair Defenses: Disable or Modify Tools"))
);
// The agent's own: a sink dropped alerts (its spool full or unwritable),
// folded per interval.
rule!(AGENT_SINK_OVERFLOW, "agent.sink_overflow", High, None);
// Kernel tracking state that could not be kept: what follows is unseen.
rule!(
    AGENT_WATCHED_MAP_FULL,
    "agent.watched_map_full",
    Critical,
    Some(("T1562.001", "Impair Defenses: Disable or Modify Tools"))
);
// The agent's own: a non-root user asked for more live server names than
// `[servers] max_per_uid`; the server runs unwatched (or not at all with
// `--require-agent`). Folded: one per user per minute, with the count.
rule!(
    AGENT_REGISTRATION_REFUSED,
    "agent.registration_refused",
    Medium,
    Some(("T1562.001", "Impair Defenses: Disable or Modify Tools"))
);
// Self-protection: a watched process signalled, traced or reached into the
// agent, used bpf() commands that reach its kernel objects, or changed a
// file it stands on (`pipeline/tamper.rs`).
rule!(
    AGENT_TAMPER,
    "agent.tamper",
    Critical,
    Some(("T1562.001", "Impair Defenses: Disable or Modify Tools"))
);
// Enforcement: a layer of an enforced server's sandbox denied an operation
// (the alert names the layer, the operation and the tool call in flight).
rule!(
    ENFORCE_DENIED,
    "enforce.denied",
    High,
    Some(("T1562", "Impair Defenses"))
);
// Enforcement: a server in enforce mode started without a layer it needs
// (this kernel lacks it); what that layer would have blocked is only seen.
rule!(
    ENFORCE_DEGRADED,
    "enforce.degraded",
    High,
    Some(("T1562.001", "Impair Defenses: Disable or Modify Tools"))
);

/// Every rule, in catalogue order.
pub static ALL: &[&Rule] = &[
    &ENFORCE_DENIED,
    &ENFORCE_DEGRADED,
    &SERVER_UNDECLARED,
    &MANIFEST_INVALID,
    &EXEC_UNDECLARED,
    &EXEC_SHELL,
    &EXEC_REVERSE_SHELL,
    &EXEC_WRITE_THEN_EXEC,
    &EXEC_FILELESS,
    &FILE_READ_UNDECLARED,
    &FILE_WRITE_UNDECLARED,
    &FILE_PATH_UNKNOWN,
    &NET_CONNECT_UNDECLARED,
    &NET_LISTEN_UNDECLARED,
    &NET_LISTEN_EXPOSED,
    &NET_ACCEPT_UNDECLARED,
    &TOOL_READ_OUTSIDE_GRANT,
    &TOOL_WRITE_OUTSIDE_GRANT,
    &TOOL_EXEC_OUTSIDE_GRANT,
    &TOOL_NET_OUTSIDE_GRANT,
    &PROC_PTRACE,
    &PROC_MEMORY,
    &PROC_ENVIRON,
    &PROC_MAPS,
    &PRIV_SETID,
    &PRIV_KERNEL_MODULE,
    &PRIV_BPF,
    &PRIV_MOUNT,
    &PROC_FD_STEAL,
    &EVASION_COMPAT_SYSCALL,
    &EVASION_IO_URING,
    &EVASION_IO_URING_OP,
    &CRED_SSH,
    &CRED_TLS_KEY,
    &CRED_CLOUD,
    &CRED_KUBE,
    &CRED_DOTENV,
    &CRED_NETRC,
    &CRED_NPMRC,
    &CRED_PYPIRC,
    &CRED_DOCKER,
    &CRED_GIT,
    &CRED_BROWSER,
    &CRED_KEYRING,
    &CRED_SHELL_HISTORY,
    &CRED_SHADOW,
    &MCP_POISON_HIDDEN_INSTRUCTION,
    &MCP_POISON_MODEL_DIRECTIVE,
    &MCP_POISON_INVISIBLE_UNICODE,
    &MCP_POISON_LONG_DESCRIPTION,
    &MCP_POISON_CREDENTIAL_REFERENCE,
    &MCP_POISON_TOOL_SHADOWING,
    &MCP_POISON_SECRECY_DIRECTIVE,
    &MCP_POISON_UNRELATED_ACTION,
    &MCP_SECRET_IN_RESULT,
    &MCP_SECRET_IN_ARGUMENTS,
    &MCP_RUG_PULL_CHANGED,
    &MCP_RUG_PULL_ADDED,
    &MCP_RUG_PULL_REMOVED,
    &MCP_RUG_PULL_RENAMED,
    &GATE_DENIED,
    &GATE_WITHHELD,
    &GATE_UNLISTED_ALLOWED,
    &GATE_REFUSED_MESSAGE,
    &AGENT_TEST,
    &AGENT_EVENT_LOSS,
    &AGENT_WATCH_GAP,
    &AGENT_SINK_OVERFLOW,
    &AGENT_WATCHED_MAP_FULL,
    &AGENT_REGISTRATION_REFUSED,
    &AGENT_TAMPER,
];

/// The rule of a credential kind of the catalogue.
/// Whether a rule id is a credential catalogue rule (never folded away).
pub fn is_credential(id: &str) -> bool {
    id.starts_with("cred.")
}

pub fn credential(id: &str) -> RuleId {
    ALL.iter()
        .copied()
        .find(|r| r.id == id)
        .expect("every catalogue kind has a rule")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_credential_kind_has_a_high_rule_with_a_technique() {
        for k in crate::policy::catalog::CATALOGUE {
            let r = credential(k.rule);
            assert_eq!(r.severity, Severity::High);
            assert!(r.mitre.is_some(), "{}", k.rule);
        }
    }

    #[test]
    fn every_mcp_rule_has_a_technique() {
        for r in ALL.iter().filter(|r| r.id.starts_with("mcp.")) {
            assert!(r.mitre.is_some(), "{}", r.id);
        }
    }

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<&str> = ALL.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
