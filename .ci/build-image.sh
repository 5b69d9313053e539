#!/usr/bin/env bash
# Build docker/Dockerfile for real, with podman and no daemon, for the container tests (tests/test_container.py).
#
# Why: the image is what Docker, Compose and Kubernetes users run; parsing the Dockerfile proves little. Needs
# Debian's `podman`, `buildah` and `debootstrap` and root. Nothing is pulled: the Dockerfile's base
# (pytorch/pytorch:...-runtime, on Docker Hub, which this machine cannot reach) is replaced by a local stand-in
# under the same name, and the build runs with --pull=never.
#
# The stand-in is what the real base is to the Dockerfile: a Debian root file system (debootstrap, minbase)
# with a Python environment at /opt/conda, first on PATH, holding torch and torchvision, so that `python` and
# `pip` inside the build behave as on the real base. Its torch is the build this machine's pip installs for
# the project (PyPI's x86_64 wheels; they run on the CPU). A CPU-only torch cannot stand in: PyPI's
# torchvision wheels link torch's CUDA libraries and do not import beside it. The stand-in also trusts the
# certificate authorities this machine adds under /usr/local/share/ca-certificates (a TLS-inspecting proxy),
# as a site's own base image would, so that pip inside the build reaches PyPI.
#
# Usage (from the repository root, as root):
#   eval "$(.ci/build-image.sh)"      # exports EDGESEARCH_TEST_IMAGE (the image's name) into this shell
#   .venv/bin/python -m pytest tests/test_container.py
#
# Only `export NAME=VALUE` lines go to stdout; progress, the build time and the image's size go to stderr.
# Cached: the stand-in is kept in podman's image store (rebuilt only when missing), the debootstrap root file
# system and the torch wheels under EDGESEARCH_IMAGE_CACHE, and podman keeps the Dockerfile's layers, so a
# second run rebuilds only what changed. Chroot isolation shares the host's network: 127.0.0.1 inside a
# build or a `buildah run` is this machine's, which is how the tests reach their PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${EDGESEARCH_IMAGE_NAME:-localhost/edgesearch:ci}
CACHE=${EDGESEARCH_IMAGE_CACHE:-/var/cache/edgesearch-image}
SUITE=bookworm
# The Debian mirror this machine's apt uses.
MIRROR=$(sed -n 's/^URIs: *\([^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
BASE=$(awk 'toupper($1) == "FROM" { print $2; exit }' docker/Dockerfile)
[[ $BASE == */*/* ]] || BASE=docker.io/$BASE
STANDIN_PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "build-image: $*" >&2; }
seconds() { echo $(($(date +%s) - $1)); }

for tool in podman buildah debootstrap; do
    command -v "$tool" >/dev/null || { log "$tool is missing: apt-get install podman buildah debootstrap"; exit 1; }
done
mkdir -p "$CACHE"

standin() {
    local rootfs=$CACHE/rootfs-$SUITE wheels=$CACHE/wheels started
    started=$(date +%s)
    if [[ ! -x $rootfs/usr/bin/python3 ]]; then
        log "debootstrap $SUITE from $MIRROR"
        rm -rf "$rootfs.tmp"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            "$SUITE" "$rootfs.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
        mv "$rootfs.tmp" "$rootfs"
    fi
    # The wheels this machine's pip picks for the project (its configured indexes and constraints).
    log "torch and torchvision wheels"
    python3 -m pip download -q -d "$wheels" torch torchvision 2>&1 | grep -v "^WARNING: Location" >&2 || true
    local work=$CACHE/standin
    rm -rf "$work"
    cp -a "$rootfs" "$work"
    cp /usr/local/share/ca-certificates/*.crt "$work/usr/local/share/ca-certificates/" 2>/dev/null || true
    chroot "$work" update-ca-certificates >/dev/null 2>&1
    chroot "$work" python3 -m venv /opt/conda
    mkdir -p "$work/tmp/wheels"
    mount --bind "$wheels" "$work/tmp/wheels"
    trap 'umount "$CACHE/standin/tmp/wheels" 2>/dev/null || true' EXIT
    # A clean environment: this machine's pip settings (PIP_FIND_LINKS and the like) name its own folders.
    chroot "$work" env -i PATH=/usr/bin:/bin HOME=/root /opt/conda/bin/pip install -q --no-cache-dir \
        --disable-pip-version-check --no-index --find-links /tmp/wheels torch torchvision
    umount "$work/tmp/wheels"
    trap - EXIT
    rmdir "$work/tmp/wheels"
    local versions
    versions=$(chroot "$work" /opt/conda/bin/python -c \
        "import torch, torchvision; print(f'torch {torch.__version__}, torchvision {torchvision.__version__}')")
    log "importing the stand-in as $BASE ($versions)"
    tar -C "$work" -c . | podman import -q \
        --change "ENV PATH=$STANDIN_PATH" \
        --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
        --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
        --change "LABEL edgesearch.stand-in=\"Debian $SUITE + $versions\"" \
        --change "WORKDIR /workspace" \
        - "$BASE" >/dev/null
    rm -rf "$work"
    log "stand-in base ready in $(seconds "$started") s"
}

if podman image exists "$BASE"; then
    log "stand-in base $BASE: cached"
else
    standin
fi

started=$(date +%s)
log "podman build -f docker/Dockerfile -t $IMAGE (chroot isolation, no pull)"
if ! podman build --isolation chroot --pull=never -f docker/Dockerfile -t "$IMAGE" . >"$CACHE/build.log" 2>&1; then
    tail -40 "$CACHE/build.log" >&2
    log "the build failed; its whole log: $CACHE/build.log"
    exit 1
fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE")
log "built $IMAGE in $(seconds "$started") s: $((size / 1000000)) MB ($(((size - base_size) / 1000000)) MB over the base)"
echo "export EDGESEARCH_TEST_IMAGE=$IMAGE"
