// Validates every document of documents.json (written by render.py) against
// the kubernetes-models schemas (npm): the Kubernetes API's kinds and the
// Prometheus operator's (ServiceMonitor, PrometheusRule). An unknown kind
// fails: nothing goes unchecked.
//
//   node validate.mjs NODE_MODULES DOCUMENTS_JSON
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, documentsJson] = process.argv.slice(2);
const packages = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator/monitoring.coreos.com",
};

async function model(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const base = packages[group] ?? (group ? `kubernetes-models/${group}` : "kubernetes-models");
  const file = resolve(modules, base, version, `${kind}.js`);
  const module = await import(pathToFileURL(file).href).catch(() => {
    throw new Error(`no kubernetes-models schema for ${apiVersion} ${kind} (${file})`);
  });
  return module[kind];
}

// The schemas are live: a DaemonSet whose hostPID is not a boolean fails them.
const canary = { metadata: { name: "c" }, spec: { selector: {}, template: { spec: { hostPID: "yes", containers: [] } } } };
const DaemonSet = await model("apps/v1", "DaemonSet");
if ((() => { try { new DaemonSet(canary).validate(); return true; } catch { return false; } })()) {
  console.error("kubernetes-models accepted a DaemonSet with hostPID: \"yes\": the check checks nothing");
  process.exit(1);
}

const failures = [];
const documents = JSON.parse(readFileSync(documentsJson, "utf8"));
for (const { source, document } of documents) {
  try {
    const Model = await model(document.apiVersion, document.kind);
    new Model(document).validate();
  } catch (e) {
    failures.push(`${source}: ${document.kind} ${document.metadata?.name}: ${e.message}`);
  }
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`kubernetes-models: ${documents.length} documents valid`);
