#!/usr/bin/env bash
# Container images for the infrastructure Janus talks to (Redis, NATS, etcd) and the base of its
# own images. One switch, per image, by variable:
#
#   JANUS_REDIS_IMAGE  default redis:7.2-alpine                       (official)
#   JANUS_NATS_IMAGE   default nats:2.10-alpine                       (official)
#   JANUS_ETCD_IMAGE   default gcr.io/etcd-development/etcd:v3.5.17   (official)
#   JANUS_BASE_IMAGE   default debian:bookworm-slim                   (official)
#
# `deploy/images.sh ensure` makes every image usable and prints `export NAME=image` lines for
# the ones it had to replace: a variable already set is used as is; otherwise the official image
# is used when present or pullable, and when no registry answers (air-gapped machines, this
# project's CI) an equivalent is built locally from Debian packages: a bookworm root file system
# made with debootstrap (redis-server, nats-server, etcd-server included) is `docker import`ed as
# janus-offline/debian:bookworm, and thin images with the official images' ports and commands
# are built on it. Nothing is pulled for those.
#
#   eval "$(deploy/images.sh ensure)"     # what scripts/test.sh does
#   deploy/images.sh offline              # build the local images only
set -euo pipefail

OFFLINE_BASE=janus-offline/debian:bookworm
here="$(cd "$(dirname "$0")" && pwd)"

log() { echo "images: $*" >&2; }

need_docker() {
  if ! docker info >/dev/null 2>&1; then
    log "cannot reach the Docker daemon: install Docker (apt-get install docker.io) and start it (service docker start), then rerun"
    exit 1
  fi
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_offline_base() {
  if have_image "$OFFLINE_BASE"; then
    return
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  local root
  root="$(mktemp -d /var/tmp/janus-rootfs.XXXXXX)"
  log "debootstrap bookworm into $root (a few minutes)"
  debootstrap --variant=minbase \
    --include=ca-certificates,redis-server,nats-server,etcd-server \
    bookworm "$root" "${JANUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  log "docker import $OFFLINE_BASE"
  tar -C "$root" -c . | docker import - "$OFFLINE_BASE" >/dev/null
  rm -rf "$root"
}

build_offline() {
  build_offline_base
  local svc
  for svc in redis nats etcd; do
    if ! have_image "janus-offline/$svc:latest"; then
      log "building janus-offline/$svc"
      DOCKER_BUILDKIT=0 docker build -q -t "janus-offline/$svc:latest" \
        --build-arg "BASE_IMAGE=$OFFLINE_BASE" "$here/images/$svc" >/dev/null
    fi
  done
}

# usable IMAGE: present locally, or pulled within a short time.
usable() {
  have_image "$1" || timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

ensure() {
  need_docker
  local var official offline
  local -a wanted=(
    "JANUS_REDIS_IMAGE redis:7.2-alpine janus-offline/redis:latest"
    "JANUS_NATS_IMAGE nats:2.10-alpine janus-offline/nats:latest"
    "JANUS_ETCD_IMAGE gcr.io/etcd-development/etcd:v3.5.17 janus-offline/etcd:latest"
    "JANUS_BASE_IMAGE debian:bookworm-slim $OFFLINE_BASE"
  )
  local line
  for line in "${wanted[@]}"; do
    read -r var official offline <<<"$line"
    if [ -n "${!var:-}" ]; then
      have_image "${!var}" || usable "${!var}" || { log "$var=${!var} is neither present nor pullable"; exit 1; }
      continue
    fi
    if usable "$official"; then
      echo "export $var=$official"
    else
      log "$official cannot be pulled: using the local build $offline"
      build_offline
      echo "export $var=$offline"
    fi
  done
}

case "${1:-}" in
  ensure) ensure ;;
  offline) need_docker; build_offline ;;
  *) echo "usage: $0 ensure|offline" >&2; exit 2 ;;
esac
