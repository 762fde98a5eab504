#!/usr/bin/env bash
# Build a local stand-in for the upstream `python:3.11-slim-bookworm` image, for one architecture.
#
#   .ci/make-debian-python-base.sh python:3.11-slim-bookworm arm64
#
# CI has no container registry. Debian bookworm's own Python is 3.11, for amd64 and
# arm64 alike, so the stand-in is a debootstrap rootfs with python3 and python3-venv
# (arm64 runs under qemu-user through binfmt_misc). `python` and `python3` are on PATH
# in /usr/local/bin as in the official image. Dockerfiles that use this base create a
# venv, so they work the same on the official image and on this one.
set -euo pipefail

TAG="${1:?image tag}"
ARCH="${2:?amd64 or arm64}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$TAG" --format '{{.Architecture}}' 2>/dev/null | grep -qx "$ARCH"; then
    echo "base image $TAG ($ARCH) already present"
    exit 0
fi

ROOTFS="$(mktemp -d /tmp/pybase-$ARCH.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT

debootstrap --arch "$ARCH" --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
    bookworm "$ROOTFS" "$MIRROR" >"/tmp/debootstrap-$ARCH.log" 2>&1 \
    || { tail -20 "/tmp/debootstrap-$ARCH.log"; exit 1; }
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python3"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

# `docker load`, not `docker import`: Docker 20.10 would record the host's architecture.
python3 "$(dirname "$0")/load-rootfs.py" "$TAG" "$ARCH" "$ROOTFS" \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 --cmd '["python3"]'
docker run --rm --platform "linux/$ARCH" "$TAG" python -c \
    'import platform, ssl, venv; print("stand-in", "'"$TAG"'", platform.machine(), platform.python_version(), "ready")'
