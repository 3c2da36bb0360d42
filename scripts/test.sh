#!/usr/bin/env bash
# The one test command: set-up on a fresh machine, then format, lint, template lint and every
# test (DynamoDB Local, the Stripe emulator and the EventBridge capture are started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] cargo fmt --check"; cargo fmt --all -- --check
echo "[test] cargo clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
if [ -f scripts/lint-template.sh ]; then echo "[test] cfn-lint, checkov and sam validate on template.yaml"; bash scripts/lint-template.sh; fi
echo "[test] cargo test"; cargo test --workspace --locked
echo "[test] stripe conformance"; bash scripts/conformance/run.sh --self-test
