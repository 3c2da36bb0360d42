#!/usr/bin/env bash
# Measures the release Lambdas and rewrites docs/benchmarks.md (see that page for what each
# figure means). Slow: a clean release build of the functions takes ~15 min on 2 cores, the
# bench itself a few minutes. Not part of .ci/run.
#
#   bash bench/run.sh                                        # everything, billing at 1k and 10k
#   BENCH_ARGS='--billing 1000,10000,100000' bash bench/run.sh
#   BENCH_ARGS='--skip billing,rss --starts 5' bash bench/run.sh   # quick look
set -euo pipefail
cd "$(dirname "$0")/.."

functions=(authorizer usage checkout stripe-webhook billing-run)
pkgs=()
for f in "${functions[@]}"; do pkgs+=(-p "$f"); done

echo "== release build of the functions" >&2
cargo build --release "${pkgs[@]}"

echo "== ingestion hot path (criterion): cargo bench -p usage --bench ingest" >&2
cargo bench -p usage --bench ingest

# A dev build, as for the published figures: the driver (Runtime API, counting proxy,
# in-process emulator) is not what is measured, and DynamoDB Local is the bottleneck anyway.
echo "== the driver (tollgate-bench)" >&2
cargo build -p tollgate-bench

# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
target/debug/tollgate-bench --root "$PWD" --out docs/benchmarks.md ${BENCH_ARGS:-}
