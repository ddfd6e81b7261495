#!/usr/bin/env bash
# Reruns every benchmark BENCHMARKS.md quotes, on this machine:
#
#   scripts/bench.sh              # micro-benchmarks (criterion), then `janus bench all`
#   scripts/bench.sh --quick      # shorter criterion runs and 5 s load phases
#
# The load generator starts its own edge, broker and demo game service (and the raw tokio echo
# baseline) as separate processes of a release build; nothing else needs to run. Results: the
# criterion reports under $CARGO_TARGET_DIR/criterion, and bench-results.jsonl (one JSON line
# per scenario) plus the summary table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/janus-target}"

criterion=(--warm-up-time 2 --measurement-time 5)
load=(--secs 10)
if [ "${1:-}" = "--quick" ]; then
  criterion=(--warm-up-time 1 --measurement-time 2)
  load=(--secs 5)
fi

echo "==> micro-benchmarks (criterion)"
# Only the criterion targets: libtest's harness would refuse criterion's options.
{
  cargo bench --locked -p janus-protocol --bench protocol -- "${criterion[@]}"
  cargo bench --locked -p janus-transport --bench transport -- "${criterion[@]}"
  cargo bench --locked -p janus-edge -p janus-broker --bench routing -- "${criterion[@]}"
} 2>&1 | grep -E '^[A-Za-z_0-9/]+ +time:|^ +(time|thrpt):|^[A-Za-z_0-9]+(/[A-Za-z_0-9]+)?$'

echo "==> whole path (janus bench all, release build)"
cargo build --locked --release -p janus-cli
rm -f bench-results.jsonl
"$CARGO_TARGET_DIR/release/janus" bench all "${load[@]}" --json bench-results.jsonl
