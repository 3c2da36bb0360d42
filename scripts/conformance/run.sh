#!/usr/bin/env bash
# The Stripe conformance suite: Stripe's official Python and Node clients (installed into .tools/
# by scripts/setup.sh) against the emulator binary, over every endpoint tollgate uses.
#   bash scripts/conformance/run.sh              # passes when the emulator conforms
#   bash scripts/conformance/run.sh --self-test  # also shows the suite fails when the emulator
#                                                # drops one fixture field (invoice line
#                                                # `subscription`, then `invoice.account_country`)
# Stripe's fixtures are read at run time from ../shared/reference/stripe/fixtures3.json (beside
# the repository, where CI has it), or from $STRIPE_FIXTURES.
set -euo pipefail
cd "$(dirname "$0")/../.."

fixtures="${STRIPE_FIXTURES:-../shared/reference/stripe/fixtures3.json}"
if [ ! -f "$fixtures" ]; then
  echo "[conformance] Stripe's fixtures not found at $fixtures (set STRIPE_FIXTURES)" >&2
  exit 1
fi
fixtures="$(cd "$(dirname "$fixtures")" && pwd)/$(basename "$fixtures")"
python=.tools/venv/bin/python
export STRIPE_NODE_MODULES="$PWD/.tools/node/node_modules"
if ! "$python" -c 'import stripe' 2>/dev/null || [ ! -d "$STRIPE_NODE_MODULES/stripe" ]; then
  echo "[conformance] Stripe's clients are missing: run scripts/setup.sh" >&2
  exit 1
fi

cargo build --quiet --locked -p tollgate-stripe-emulator --bin stripe-emulator
emulator="${CARGO_TARGET_DIR:-target}/debug/stripe-emulator"
work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Starts the emulator (with STRIPE_EMULATOR_DROP_FIELD as given) and runs both clients against
# it; returns non-zero when any check failed.
suite() {
  local drop="$1" out="$work/run-${1:-clean}"
  mkdir -p "$out"
  STRIPE_EMULATOR_DROP_FIELD="$drop" "$emulator" --port 0 >"$out/emulator.log" 2>&1 &
  pid=$!
  local url=""
  for _ in $(seq 1 100); do
    url="$(grep -o 'http://127.0.0.1:[0-9]*' "$out/emulator.log" || true)"
    [ -n "$url" ] && break
    sleep 0.1
  done
  if [ -z "$url" ]; then echo "[conformance] the emulator did not start" >&2; cat "$out/emulator.log" >&2; return 1; fi
  local status=0
  "$python" scripts/conformance/conformance.py "$url" "$fixtures" "$out" >"$out/python.log" 2>&1 || status=1
  node scripts/conformance/conformance.cjs "$url" "$fixtures" "$out" >"$out/node.log" 2>&1 || status=1
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
  if [ -z "$drop" ] || [ "$status" = 0 ]; then
    grep -hE 'FAIL|passed, [0-9]+ failed|object types' "$out/python.log" "$out/node.log" | sed 's/^/[conformance] /' || true
  fi
  cp "$out"/*.log "$work/" 2>/dev/null || true
  LAST_OUT="$out"
  return $status
}

total_failed=0
total_passed=0
if suite ""; then
  total_passed=$((total_passed + 1))
else
  total_failed=$((total_failed + 1))
fi

if [ "${1:-}" = "--self-test" ]; then
  for field in line_item.subscription invoice.account_country; do
    if suite "$field"; then
      echo "[conformance] self-test: the suite PASSED with $field dropped: it would not catch it"
      total_failed=$((total_failed + 1))
    elif grep -q "${field#*.} missing\|\.subscription" "$LAST_OUT/python.log"; then
      echo "[conformance] self-test: dropping $field fails the suite, naming the field:"
      grep -m1 "${field#*.}" "$LAST_OUT/python.log" | sed 's/^/[conformance]   /'
      total_passed=$((total_passed + 1))
    else
      echo "[conformance] self-test: dropping $field failed the suite for another reason:"
      grep FAIL "$LAST_OUT/python.log" "$LAST_OUT/node.log" | head -5 | sed 's/^/[conformance]   /'
      total_failed=$((total_failed + 1))
    fi
  done
fi
echo "conformance: $total_passed passed, $total_failed failed"
[ "$total_failed" = 0 ]
