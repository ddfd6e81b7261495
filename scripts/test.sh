#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
#   scripts/test.sh
#
# Formatting, lints, the container images the integration suites start (deploy/images.sh:
# official images, or local builds from Debian packages where no registry answers), every
# unit/property/integration test, the benches in test mode, the doc
# tests, and a build of the fuzz targets. Build output goes to $CARGO_TARGET_DIR, by default
# /var/tmp/janus-target, so repeated runs on one machine reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/janus-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One-shot builds gain nothing from incremental caches, which only grow the target directory.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n==> %s\n' "$*"; }

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' is not installed: $2" >&2; exit 1; }
}
need cargo "install the Rust toolchain (https://rustup.rs) and retry"
need c++ "the fuzz targets build libFuzzer: apt-get install g++"
need python3 "the protocol vectors are cross-checked in Python: apt-get install python3 python3-pip"
cargo fmt --version >/dev/null 2>&1 || { echo "error: rustfmt missing: rustup component add rustfmt" >&2; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "error: clippy missing: rustup component add clippy" >&2; exit 1; }

step "format"
cargo fmt --all -- --check
(cd fuzz && cargo fmt -- --check)

step "protocol vectors against an independent implementation (Python, pyca/cryptography)"
python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install --quiet 'cryptography>=42' || {
  echo "error: the vector check needs Python's 'cryptography' package: python3 -m pip install cryptography" >&2; exit 1; }
python3 shared/tests/vectors/verify.py

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "container images for the integration suites (Redis, NATS, etcd)"
need docker "the integration suites start Redis, NATS and etcd in containers: apt-get install docker.io && service docker start"
eval "$(deploy/images.sh ensure)"

step "the janus image for the full-stack suites (from this tree's binary)"
cargo build --locked -p janus-cli
eval "$(deploy/images.sh project "$CARGO_TARGET_DIR/debug/janus")"

step "fuzz targets build"
cargo build --manifest-path fuzz/Cargo.toml --bins

results=$(mktemp)
trap 'rm -f "$results"' EXIT

step "doc tests"
cargo test --workspace --doc --locked 2>&1 | tee -a "$results"

step "tests (unit, property, integration, benches in test mode)"
cargo test --workspace --all-targets --locked 2>&1 | tee -a "$results"

# One closing line for the whole run, summed over every test binary above.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nsummary: %d passed, %d failed\n", p, f }' "$results"
