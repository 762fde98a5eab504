#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for tf1kernel: system packages, a running
# Docker engine, the Python environment, the kernel image and the kernelspec.
# Idempotent: run it again at any time. Needs root (apt-get, dockerd).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
STATE="$ROOT/.ci/state"
mkdir -p "$STATE"
log() { printf '\n== %s  [%ss]\n' "$*" "$SECONDS"; }

log "system packages"
# chromium: headless browser for the JupyterLab / Notebook 7 tests (driven by Playwright).
# qemu-user-static: runs the kernel under an x86-64 CPU model without AVX, as Rosetta presents it.
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v patchelf >/dev/null \
        || ! command -v chromium >/dev/null || ! command -v ip >/dev/null \
        || ! command -v qemu-x86_64-static >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap patchelf openssl chromium iproute2 qemu-user-static >/dev/null
fi

log "Docker engine"
if ! docker info >/dev/null 2>&1; then
    (setsid dockerd >/tmp/dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 /tmp/dockerd.log; echo "dockerd did not start"; exit 1; }
fi
docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}'

log "Python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v -e "^WARNING: Location" || true
.venv/bin/python -c "import tf1kernel, jupyter_client; print('tf1kernel', tf1kernel.__version__, 'jupyter_client', jupyter_client.__version__)"

log "base image python:3.7-slim-bookworm (local stand-in: no registry here)"
bash .ci/make-python-base.sh python:3.7-slim-bookworm

log "kernel image (tf1kernel build)"
# Markers that must never reach the image: a throwaway CA added to the CA bundle
# the host's pip uses (PIP_CERT, which `tf1kernel build` picks up by default)
# and a dummy credential in the index URL. tests/acceptance/test_image.py hunts for both.
if [ ! -f "$STATE/markers.json" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=tf1kernel marker CA" \
        -keyout "$STATE/marker-ca.key" -out "$STATE/marker-ca.pem" 2>/dev/null
    SECRET="marker-$(openssl rand -hex 12)"
    printf '{"ca_file": "%s", "secret": "%s"}\n' "$STATE/marker-ca.pem" "$SECRET" > "$STATE/markers.json"
fi
SECRET=$(.venv/bin/python -c "import json; print(json.load(open('$STATE/markers.json'))['secret'])")
HOST_CA=$(.venv/bin/python -c "from tf1kernel.images import host_pip_ca_bundle as f; print(f() or '')")
cat ${HOST_CA:+"$HOST_CA"} "$STATE/marker-ca.pem" > "$STATE/build-ca.pem"
build_start=$SECONDS
PIP_CERT="$STATE/build-ca.pem" .venv/bin/tf1kernel build --index-url "https://tf1kernel-ci:${SECRET}@pypi.org/simple"
echo "image build took $((SECONDS - build_start)) s"

log "kernelspec"
.venv/bin/tf1kernel install --user
.venv/bin/jupyter kernelspec list
log "setup done"
