#!/usr/bin/env bash
# Container images for the infrastructure Janus talks to (Redis, NATS, etcd, Prometheus) and the
# base of its own images. One switch, per image, by variable:
#
#   JANUS_REDIS_IMAGE       default redis:7.2-alpine                       (official)
#   JANUS_REDIS_OLD_IMAGE   default redis:6.0-alpine                       (official; an older
#                           Redis the route-store conformance suite also runs on)
#   JANUS_NATS_IMAGE        default nats:2.10-alpine                       (official)
#   JANUS_ETCD_IMAGE        default gcr.io/etcd-development/etcd:v3.5.17   (official)
#   JANUS_PROMETHEUS_IMAGE  default prom/prometheus:v2.53.2                (official)
#   JANUS_BASE_IMAGE        default debian:bookworm-slim                   (official)
#   JANUS_IMAGE             default janus:local (built here by `project`, never pulled)
#
# The compose `observability` profile also uses JANUS_GRAFANA_IMAGE, JANUS_JAEGER_IMAGE and
# JANUS_OTEL_COLLECTOR_IMAGE. Debian packages none of them, so they have no local build:
# `ensure` reports whether they are usable and the profile needs a registry (or those images
# loaded by hand with `docker load`) to start.
#
# `deploy/images.sh ensure` makes every image usable and prints `export NAME=image` lines for
# the ones it had to replace, and writes every chosen image as NAME=image into the repository's
# `.env` (other lines of it are kept), which docker compose reads by itself: a stack started from
# a new shell uses the same images. A variable already set is used as is; otherwise the official image
# is used when present or pullable, and when no registry answers (air-gapped machines, this
# project's CI) an equivalent is built locally from Debian packages: a bookworm root file system
# made with debootstrap (redis-server, nats-server, etcd-server, etcdctl, wget included) is
# `docker import`ed as janus-offline/debian:<tag>, and thin images with the official images' ports and commands
# are built on it (Prometheus from the binaries of Debian's `prometheus` package, fetched with
# apt-get download). Nothing is pulled for those. The older Redis comes the same way from a
# bullseye root file system holding only redis-server (Redis 6.0: older than 6.2, so it lacks
# `SET … GET`; buster's Redis 5.0 is no longer on deb.debian.org).
#
#   eval "$(deploy/images.sh ensure)"     # what scripts/test.sh does
#   deploy/images.sh offline              # build the local images only
#   deploy/images.sh project [BINARY]     # the janus image (JANUS_IMAGE, default janus:local)
#                                         # from a host-built binary (default: a release build
#                                         # into $CARGO_TARGET_DIR, by default /var/tmp/janus-target
#                                         # as for scripts/test.sh). Compose's default is
#                                         # janus:local too; another tag goes into .env by hand.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# What goes into the local Debian base; the tag changes whenever this list or a stand-in
# Dockerfile does, so a machine never reuses a stale build.
OFFLINE_PACKAGES="ca-certificates,redis-server,nats-server,etcd-server,etcd-client,wget"
OFFLINE_TAG="bookworm-$( (echo "$OFFLINE_PACKAGES"; cat "$here"/images/*/Dockerfile) | sha256sum | cut -c1-10)"
OFFLINE_BASE="janus-offline/debian:$OFFLINE_TAG"
# The older Redis (Debian bullseye's redis-server, 6.0) on a root file system of its own.
OLD_REDIS_PACKAGES="redis-server"
OLD_REDIS_BASE="janus-offline/debian:bullseye-$(echo "$OLD_REDIS_PACKAGES" | sha256sum | cut -c1-10)"
OLD_REDIS_TAG="bullseye-$( (echo "$OLD_REDIS_PACKAGES"; cat "$here/images/redis/Dockerfile") | sha256sum | cut -c1-10)"

log() { echo "images: $*" >&2; }

# The `.env` docker compose reads from the project directory (this repository's root).
ENV_FILE="${JANUS_ENV_FILE:-$here/../.env}"

# remember NAME VALUE: sets NAME=VALUE in $ENV_FILE, replacing an earlier NAME= line and keeping
# every other line.
remember() {
  local name="$1" value="$2" kept
  kept="$(mktemp)"
  if [ -f "$ENV_FILE" ]; then
    grep -v "^$name=" "$ENV_FILE" >"$kept" || true
  fi
  echo "$name=$value" >>"$kept"
  cat "$kept" >"$ENV_FILE"
  rm -f "$kept"
}

need_docker() {
  if ! docker info >/dev/null 2>&1; then
    log "cannot reach the Docker daemon: install Docker (apt-get install docker.io) and start it (service docker start), then rerun"
    exit 1
  fi
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# docker build that stays quiet unless it fails (the legacy builder's banner is noise).
build_image() {
  local errors
  errors="$(mktemp)"
  if ! DOCKER_BUILDKIT=0 docker build -q "$@" >/dev/null 2>"$errors"; then
    cat "$errors" >&2
    rm -f "$errors"
    return 1
  fi
  rm -f "$errors"
}

# debootstrap_image SUITE PACKAGES IMAGE: a minimal Debian SUITE root file system with PACKAGES,
# imported as IMAGE (skipped when IMAGE exists).
debootstrap_image() {
  local suite="$1" packages="$2" image="$3"
  if have_image "$image"; then
    return
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  local root
  root="$(mktemp -d /var/tmp/janus-rootfs.XXXXXX)"
  log "debootstrap $suite into $root (a few minutes)"
  debootstrap --variant=minbase \
    --include="$packages" \
    "$suite" "$root" "${JANUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  log "docker import $image"
  tar -C "$root" -c . | docker import - "$image" >/dev/null
  rm -rf "$root"
}

build_offline_base() {
  debootstrap_image bookworm "$OFFLINE_PACKAGES" "$OFFLINE_BASE"
}

# The older Redis: redis-server of Debian bullseye (6.0) under the stand-in redis Dockerfile.
build_old_redis() {
  local image="janus-offline/redis:$OLD_REDIS_TAG"
  have_image "$image" && return
  debootstrap_image bullseye "$OLD_REDIS_PACKAGES" "$OLD_REDIS_BASE"
  log "building $image"
  build_image -t "$image" --build-arg "BASE_IMAGE=$OLD_REDIS_BASE" "$here/images/redis"
}

build_offline() {
  build_offline_base
  local svc
  for svc in redis nats etcd; do
    if ! have_image "janus-offline/$svc:$OFFLINE_TAG"; then
      log "building janus-offline/$svc:$OFFLINE_TAG"
      build_image -t "janus-offline/$svc:$OFFLINE_TAG" --build-arg "BASE_IMAGE=$OFFLINE_BASE" "$here/images/$svc"
    fi
  done
  build_offline_prometheus
}

build_offline_prometheus() {
  local image="janus-offline/prometheus:$OFFLINE_TAG"
  have_image "$image" && return
  local context
  context="$(mktemp -d /var/tmp/janus-prometheus.XXXXXX)"
  log "building $image from Debian's prometheus package"
  (cd "$context" && apt-get download -q prometheus >/dev/null 2>&1) || {
    log "apt-get download prometheus failed: is a Debian mirror reachable (apt-get update)?"; rm -rf "$context"; exit 1; }
  dpkg-deb -x "$context"/prometheus_*.deb "$context/deb"
  cp "$context/deb/usr/bin/prometheus" "$context/deb/usr/bin/promtool" "$here/images/prometheus/Dockerfile" "$context/"
  rm -rf "$context"/deb "$context"/*.deb
  build_image -t "$image" --build-arg "BASE_IMAGE=$OFFLINE_BASE" "$context"
  rm -rf "$context"
}

# Images of the observability profile that Debian does not package: usable or reported (the
# `metrics` profile, Prometheus alone, starts without them).
report_unbuildable() {
  local var official line missing=
  local -a wanted=(
    "JANUS_GRAFANA_IMAGE grafana/grafana:11.2.0"
    "JANUS_JAEGER_IMAGE jaegertracing/all-in-one:1.60"
    "JANUS_OTEL_COLLECTOR_IMAGE otel/opentelemetry-collector:0.109.0"
  )
  for line in "${wanted[@]}"; do
    read -r var official <<<"$line"
    if usable "${!var:-$official}"; then
      remember "$var" "${!var:-$official}"
    else
      missing="$missing ${!var:-$official} ($var)"
    fi
  done
  if [ -n "$missing" ]; then
    log "missing, cannot be pulled and not packaged by Debian:$missing; the compose observability profile cannot start until they are loaded (docker load); --profile metrics (Prometheus alone) works"
  fi
}

# usable IMAGE: present locally, or pulled within a short time.
usable() {
  have_image "$1" || timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

ensure() {
  need_docker
  local var official offline builder
  # variable, official image, local stand-in, the function that builds the stand-in
  local -a wanted=(
    "JANUS_REDIS_IMAGE redis:7.2-alpine janus-offline/redis:$OFFLINE_TAG build_offline"
    "JANUS_REDIS_OLD_IMAGE redis:6.0-alpine janus-offline/redis:$OLD_REDIS_TAG build_old_redis"
    "JANUS_NATS_IMAGE nats:2.10-alpine janus-offline/nats:$OFFLINE_TAG build_offline"
    "JANUS_ETCD_IMAGE gcr.io/etcd-development/etcd:v3.5.17 janus-offline/etcd:$OFFLINE_TAG build_offline"
    "JANUS_PROMETHEUS_IMAGE prom/prometheus:v2.53.2 janus-offline/prometheus:$OFFLINE_TAG build_offline"
    "JANUS_BASE_IMAGE debian:bookworm-slim $OFFLINE_BASE build_offline"
  )
  local line
  for line in "${wanted[@]}"; do
    read -r var official offline builder <<<"$line"
    if [ -n "${!var:-}" ]; then
      have_image "${!var}" || usable "${!var}" || { log "$var=${!var} is neither present nor pullable"; exit 1; }
      remember "$var" "${!var}"
      continue
    fi
    if usable "$official"; then
      echo "export $var=$official"
      remember "$var" "$official"
    else
      log "$official cannot be pulled: using the local build $offline"
      "$builder"
      echo "export $var=$offline"
      remember "$var" "$offline"
    fi
  done
  log "image variables written to $ENV_FILE (docker compose reads it by itself)"
}

# project [BINARY]: builds $JANUS_IMAGE (default janus:local) from BINARY (default: a release
# build of the janus binary) on $JANUS_BASE_IMAGE (ensured first).
project() {
  need_docker
  local binary="${1:-}"
  if [ -z "$binary" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/janus-target}"
    log "building the janus binary (release, into $CARGO_TARGET_DIR)"
    (cd "$here/.." && cargo build --release --locked -p janus-cli >&2)
    binary="$CARGO_TARGET_DIR/release/janus"
  fi
  [ -x "$binary" ] || { log "no janus binary at $binary"; exit 1; }
  if [ -z "${JANUS_BASE_IMAGE:-}" ]; then
    eval "$(ensure)"
  fi
  local context
  context="$(mktemp -d /var/tmp/janus-image.XXXXXX)"
  cp "$binary" "$context/janus"
  cp "$here/Dockerfile" "$context/Dockerfile"
  log "building ${JANUS_IMAGE:-janus:local} on $JANUS_BASE_IMAGE"
  build_image -t "${JANUS_IMAGE:-janus:local}" --build-arg "BASE_IMAGE=$JANUS_BASE_IMAGE" "$context"
  rm -rf "$context"
  echo "export JANUS_IMAGE=${JANUS_IMAGE:-janus:local}"
}

case "${1:-}" in
  ensure) ensure; report_unbuildable ;;
  offline) need_docker; build_offline; build_old_redis ;;
  project) shift; project "$@" ;;
  *) echo "usage: $0 ensure|offline|project [BINARY]" >&2; exit 2 ;;
esac
