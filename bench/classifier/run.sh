#!/bin/sh
# Installs llm_guardrail (pinned) from npm into a temporary prefix and runs
# eval.mjs over tests/data. Needs node and npm; nothing is kept.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
npm install --silent --no-audit --no-fund --prefix "$tmp" llm_guardrail@2.1.2 >/dev/null
node "$here/eval.mjs" "$tmp/node_modules/llm_guardrail/index.js" "$repo/tests/data"
