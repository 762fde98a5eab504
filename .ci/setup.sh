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
# qemu-user-static: runs linux/arm64 containers (binfmt), and the kernel under an x86-64 CPU model
# without AVX, as Rosetta presents it. binutils-aarch64-linux-gnu: benchmarks/native_arm64.py strips
# the aarch64 TensorFlow the way the arm64 image build does.
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v patchelf >/dev/null \
        || ! command -v chromium >/dev/null || ! command -v ip >/dev/null \
        || ! command -v qemu-x86_64-static >/dev/null || ! command -v sshd >/dev/null \
        || ! command -v podman >/dev/null || ! command -v aarch64-linux-gnu-strip >/dev/null \
        || ! command -v docker-registry >/dev/null || ! command -v htpasswd >/dev/null \
        || ! command -v skopeo >/dev/null; then
    # openssh-server, podman and docker-registry are test fixtures (a remote host in a network namespace, a
    # Podman engine, a registry with TLS and htpasswd: CNCF distribution 2.8, which apache2-utils' htpasswd
    # gives its bcrypt users): policy-rc.d keeps apt from starting their services on this machine. skopeo is
    # the product's: `tf1kernel save`/`load` write and read OCI image archives with it.
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap patchelf openssl chromium \
        iproute2 qemu-user-static openssh-server openssh-client podman catatonit uidmap \
        binutils-aarch64-linux-gnu docker-registry apache2-utils skopeo >/dev/null
    rm -f /usr/sbin/policy-rc.d
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
.venv/bin/python -m pip install -q -e '.[test,bench]' 2>&1 | grep -v -e "^WARNING: Location" || true
.venv/bin/python -c "import tf1kernel, jupyter_client; print('tf1kernel', tf1kernel.__version__, 'jupyter_client', jupyter_client.__version__)"

log "arm64 emulation (qemu-user-static through binfmt_misc)"
# What Docker Desktop, OrbStack and Colima register themselves: linux/arm64 containers run
# here under QEMU. F (fix binary): the interpreter works inside containers too.
BINFMT=/proc/sys/fs/binfmt_misc
mountpoint -q "$BINFMT" || mount -t binfmt_misc binfmt_misc "$BINFMT"
if [ ! -e "$BINFMT/qemu-aarch64" ]; then
    echo ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
        > "$BINFMT/register"
fi
echo 1 > "$BINFMT/qemu-aarch64"  # a test that disables it restores it, but a killed run may not have
head -1 "$BINFMT/qemu-aarch64"

# Markers that must never reach an image: a throwaway CA added to the CA bundle
# the host's pip uses (PIP_CERT, which `tf1kernel build` picks up by default)
# and a dummy credential in the index URL. tests/acceptance/test_image.py hunts for both.
if [ ! -f "$STATE/markers.json" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=tf1kernel marker CA" \
        -keyout "$STATE/marker-ca.key" -out "$STATE/marker-ca.pem" 2>/dev/null
    SECRET="marker-$(openssl rand -hex 12)"
    printf '{"ca_file": "%s", "secret": "%s"}\n' "$STATE/marker-ca.pem" "$SECRET" > "$STATE/markers.json"
fi
SECRET=$(.venv/bin/python -c "import json; print(json.load(open('$STATE/markers.json'))['secret'])")
HOST_CA=$(.venv/bin/python -c "from tf1kernel.images.builder import host_pip_ca_bundle as f; print(f() or '')")
cat ${HOST_CA:+"$HOST_CA"} "$STATE/marker-ca.pem" > "$STATE/build-ca.pem"

# Every image is built as a user behind a TLS-intercepting proxy builds it, markers included.
build() {
    local started=$SECONDS
    PIP_CERT="$STATE/build-ca.pem" .venv/bin/tf1kernel build --index-url "https://tf1kernel-ci:${SECRET}@pypi.org/simple" "$@"
    echo "tf1kernel build $* took $((SECONDS - started)) s"
}

log "arm64 chain, in the background: python:3.11 stand-in, then the compat image (under qemu)"
# The engine's tags hold one architecture each: the arm64 stand-in takes the real
# per-architecture name arm64v8/python, which the build is told with --base-image.
(
    bash .ci/make-debian-python-base.sh arm64v8/python:3.11-slim-bookworm arm64 \
        && build --strategy compat --platform linux/arm64 --base-image arm64v8/python:3.11-slim-bookworm
) > "$STATE/arm64-chain.log" 2>&1 &
ARM64_CHAIN=$!

log "base images python:3.7-slim-bookworm and python:3.11-slim-bookworm (local stand-ins: no registry here)"
bash .ci/make-python-base.sh python:3.7-slim-bookworm
bash .ci/make-debian-python-base.sh python:3.11-slim-bookworm amd64

log "kernel images: emulated, compat (amd64), prebuilt (TF 1.15.5 by the source recipe's runtime, TF 1.15.0 by the native recipe)"
build
build --strategy compat --platform linux/amd64
WHEEL="$STATE/wheels/tensorflow-1.15.5-cp37-cp37m-manylinux2010_x86_64.whl"
[ -f "$WHEEL" ] || .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --platform manylinux2010_x86_64 \
    --python-version 37 --implementation cp --abi cp37m tensorflow==1.15.5 -d "$STATE/wheels" 2>&1 | grep -v "^WARNING: Location" || true
build --strategy prebuilt --wheel "$WHEEL"
# The native ARM64 recipe (docker/native), fed the x86-64 twin of tensorflow-ascend 1.15.0: tensorflow-cpu
# 1.15.0, also published under its own name. No CPython 3.7 for aarch64 exists here to run the real one.
TWIN="$STATE/wheels/tensorflow_cpu-1.15.0-cp37-cp37m-manylinux2010_x86_64.whl"
[ -f "$TWIN" ] || .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --platform manylinux2010_x86_64 \
    --python-version 37 --implementation cp --abi cp37m tensorflow-cpu==1.15.0 -d "$STATE/wheels" 2>&1 | grep -v "^WARNING: Location" || true
build --wheel "$TWIN"

# A user's --image as tests/images/FOLDER describes it, built once; only pip's CA goes into its build.
user_image() {
    local tag="$1" folder="$2" context started
    docker image inspect "$tag" >/dev/null 2>&1 && return 0
    context="$(mktemp -d)"
    cp "tests/images/$folder/Dockerfile" "$context/"
    cp "${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}" "$context/pip-ca.pem"
    started=$SECONDS
    docker build -q --network host -t "$tag" "$context" >/dev/null || { rm -rf "$context"; return 1; }
    rm -rf "$context"
    echo "$tag built in $((SECONDS - started)) s"
}

log "a user's --image: the software set of TensorFlow's 1.15.5-jupyter images (Python 3.6, ipykernel 5)"
# The oldest stack the guest meets (tests/acceptance/test_guest.py).
PYTHON_SRC=/root/.pyenv/versions/3.6.15 bash .ci/make-python-base.sh python:3.6-slim-bookworm
user_image tf1kernel-test/tensorflow:1.15.5-py36-ipykernel5 tf115-jupyter-py36

log "a user's --image: the Python side of NVIDIA's TF1 images (Python 3.8, ipykernel 6.21)"
PYTHON_SRC=/root/.pyenv/versions/3.8.18 bash .ci/make-python-base.sh python:3.8-slim-bookworm
user_image tf1kernel-test/ngc-tf1-py38-stack ngc-tf1-py38

log "waiting for the arm64 chain"
if ! wait "$ARM64_CHAIN"; then
    tail -30 "$STATE/arm64-chain.log"; echo "the arm64 chain failed"; exit 1
fi
grep -E "ready|took" "$STATE/arm64-chain.log"

log "kernelspec"
.venv/bin/tf1kernel install --user
.venv/bin/jupyter kernelspec list
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | sort
log "setup done"
