#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
#   scripts/test.sh
#
# Formatting, lints, the container images the integration suites start (deploy/images.sh:
# official images, or local builds from Debian packages where no registry answers), every
# unit/property/integration test, the benches in test mode, the doc
# tests, and a short coverage-guided run of every fuzz target. Build output goes to $CARGO_TARGET_DIR, by default
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
need openssl "the key-file tests read what janus keygen writes with OpenSSL: apt-get install openssl"
cargo fmt --version >/dev/null 2>&1 || { echo "error: rustfmt missing: rustup component add rustfmt" >&2; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "error: clippy missing: rustup component add clippy" >&2; exit 1; }

# Installs the Debian packages named after $1 (what needs them) that are missing, as root, or
# fails with the command that would.
debian_packages() {
  local why="$1" missing="" package
  shift
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing="$missing $package"
  done
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$missing"
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing ||
      { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing; } || {
        echo "error: could not install $why: apt-get install$missing" >&2; exit 1; }
  else
    echo "error: $why: apt-get install$missing" >&2
    exit 1
  fi
}

step "Debian's Go packages for the Go test peers (integration-tests/go)"
# The suites build a go-pantheon-style game service and client from these, offline, in GOPATH
# mode (integration-tests/src/gopeer.rs); a missing package fails those suites, never skips them.
# shellcheck disable=SC2046 # one word per package
debian_packages "the Go test peers' packages" \
  $(grep -v '^#' integration-tests/go/debian-packages | awk 'NF { print $1 }')
go version

step "the peers janus bench peers compares with (cli/tests/bench.rs): nats-server, nginx's stream module"
debian_packages "the bench's peers" nats-server nginx libnginx-mod-stream

step "the JavaScript SDK's tools (sdk/js): Node >= 20.10, TypeScript, Chromium, Playwright"
need node "the JavaScript SDK's tests run on Node >= 20.10 (Debian's nodejs, or NodeSource's)"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 10) ? 0 : 1)' ||
  { echo "error: the JavaScript SDK's tests need Node >= 20.10 (--experimental-websocket), found $(node --version)" >&2; exit 1; }
debian_packages "the JavaScript SDK's type check and browser test" node-typescript chromium
python3 -c 'import playwright.sync_api' 2>/dev/null || python3 -m pip install --quiet playwright || {
  echo "error: the browser test drives Chromium with Playwright for Python: python3 -m pip install playwright" >&2; exit 1; }
echo "node $(node --version), tsc $(tsc --version), $(chromium --version)"

step "format"
cargo fmt --all -- --check
(cd fuzz && cargo fmt -- --check)

step "protocol vectors against an independent implementation (Python, pyca/cryptography)"
python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install --quiet 'cryptography>=42' || {
  echo "error: the vector check needs Python's 'cryptography' package: python3 -m pip install cryptography" >&2; exit 1; }
python3 shared/protocol/tests/vectors/verify.py

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "container images for the integration suites (Redis, NATS, etcd)"
need docker "the integration suites start Redis, NATS and etcd in containers: apt-get install docker.io && service docker start"
eval "$(deploy/images.sh ensure)"

step "the janus image for the full-stack suites (from this tree's binary)"
# A tag of the suites' own: re-tagging janus:local would replace a running compose stack's
# containers on its next start (integration-tests/src/infra.rs reads JANUS_TEST_IMAGE).
export JANUS_TEST_IMAGE="${JANUS_TEST_IMAGE:-janus:test}"
cargo build --locked -p janus-cli
JANUS_IMAGE="$JANUS_TEST_IMAGE" deploy/images.sh project "$CARGO_TARGET_DIR/debug/janus" >/dev/null

step "fuzz smoke run (coverage-guided libFuzzer, a few seconds per target)"
# The flags cargo-fuzz uses with `--sanitizer none`, on the stable toolchain, so CI needs no
# extra tool; --target keeps them off build scripts and proc macros. The long runs and their
# records are in SECURITY.md (`cd fuzz && cargo fuzz run -s none <target>`).
fuzz_dir="$CARGO_TARGET_DIR/fuzz-smoke"
host="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
  cargo build --locked --manifest-path fuzz/Cargo.toml --release --bins --target "$host" --target-dir "$fuzz_dir"
for target in frame_decoder handshake_parser token_parser inflate session_frames resume_hello kcp_datagram; do
  corpus="$(mktemp -d)" log="$(mktemp)"
  inputs=("$corpus")
  [ -d "fuzz/regressions/$target" ] && inputs+=("fuzz/regressions/$target")
  mkdir -p "fuzz/artifacts/$target"
  if ! "$fuzz_dir/$host/release/$target" -max_total_time="${FUZZ_SMOKE_SECS:-5}" -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$target/" "${inputs[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    echo "error: fuzz target $target failed; the input is in fuzz/artifacts/$target/ (keep it in fuzz/regressions/$target/ once fixed)" >&2
    exit 1
  fi
  echo "$target: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') inputs, no failure"
  rm -rf "$corpus" "$log"
done

results=$(mktemp)
trap 'rm -f "$results"' EXIT

step "the Kubernetes manifests: every overlay rendered, validated and checked (deploy/kubernetes)"
command -v kubectl >/dev/null 2>&1 || debian_packages "kubectl renders the manifests" kubernetes-client
kubectl kustomize --help 2>/dev/null | grep -q -- --load-restrictor || {
  echo "error: the manifests need kubectl with kustomize v4+ (kubectl >= 1.21; Debian 12's kubernetes-client is 1.20): install kubectl from https://kubernetes.io/docs/tasks/tools/" >&2; exit 1; }
python3 -c 'import kubernetes_validate, yaml' 2>/dev/null || python3 -m pip install --quiet kubernetes-validate pyyaml || {
  echo "error: the manifests are validated with kubernetes-validate: python3 -m pip install kubernetes-validate pyyaml" >&2; exit 1; }
python3 deploy/kubernetes/test_manifests.py 2>&1 | tee -a "$results"

step "doc tests"
cargo test --workspace --doc --locked 2>&1 | tee -a "$results"

step "tests (unit, property, integration, benches in test mode)"
cargo test --workspace --all-targets --locked 2>&1 | tee -a "$results"

step "the JavaScript SDK: types, vectors, a real standalone gateway, real Chromium (sdk/js)"
tsc --noEmit -p sdk/js
sdk_results=$(mktemp)
JANUS_BIN="$CARGO_TARGET_DIR/debug/janus" JANUS_SCREENSHOT="$CARGO_TARGET_DIR/janus-demo.png" \
  node --experimental-websocket --test-timeout=180000 --test sdk/js/test/ 2>&1 | tee "$sdk_results"
# Counted in the closing summary like a test binary.
awk '/^# pass / { p = $3 } /^# fail / { f = $3 } END { printf "test result: sdk. %d passed; %d failed\n", p, f }' \
  "$sdk_results" | tee -a "$results"
rm -f "$sdk_results"

step "the suites that start a game service, again against the Go one written like Roma"
# --workspace, not -p: the same feature set as the run above, so nothing is rebuilt.
JANUS_TEST_GAME=go-roma cargo test --workspace --locked --test gateway --test resume \
  --test bad_input --test brokers --test failures --test discovery_etcd 2>&1 | tee -a "$results"

# One closing line for the whole run, summed over every test binary above.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nsummary: %d passed, %d failed\n", p, f }' "$results"
