#!/usr/bin/env bash
# Build a local stand-in for the upstream `python:3.7-slim-bookworm` image (or another CPython of the
# machine's: PYTHON_SRC=/root/.pyenv/versions/3.6.15 .ci/make-python-base.sh python:3.6-slim-bookworm).
#
# CI has no container registry, so the real base image cannot be pulled. The
# shipped Dockerfiles keep the real tag; this script produces an image under
# that same tag from a Debian bookworm rootfs (debootstrap) plus the CPython
# that is installed on the machine, laid out like the official image
# (interpreter in /usr/local, `python`, `python3` and `pip` on PATH).
set -euo pipefail

TAG="${1:-python:3.7-slim-bookworm}"
PYTHON_SRC="${PYTHON_SRC:-/root/.pyenv/versions/3.7.16}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON_VERSION="$(basename "$PYTHON_SRC")"  # 3.7.16
PY="python${PYTHON_VERSION%.*}"  # python3.7

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG already present"
    exit 0
fi

ROOTFS="$(mktemp -d /tmp/pybase.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT

# The runtime libraries of the official slim image that CPython's extension
# modules link against.
debootstrap --variant=minbase \
    --include=ca-certificates,netbase,tzdata,libssl3,libsqlite3-0,libffi8,zlib1g,libbz2-1.0,liblzma5,libreadline8,libncursesw6,libexpat1,libuuid1,libgdbm6,libnsl2,libtirpc3,libcrypt1 \
    bookworm "$ROOTFS" "$MIRROR" >/tmp/debootstrap.log 2>&1 \
    || { tail -20 /tmp/debootstrap.log; exit 1; }

cp -a "$PYTHON_SRC/." "$ROOTFS/usr/local/"
rm -rf "$ROOTFS/usr/local/lib/$PY/site-packages/_sandboxing_egress_ca.pth" \
       "$ROOTFS"/usr/local/lib/$PY/lib-dynload/_tkinter*.so
# What the official image's Dockerfile deletes: tests, bytecode and the static library.
find "$ROOTFS/usr/local" -depth \( \( -type d -a \( -name test -o -name tests -o -name idle_test \) \) \
    -o \( -type f -a \( -name '*.pyc' -o -name '*.pyo' -o -name 'libpython*.a' \) \) \) -exec rm -rf '{}' +
# pyenv's build points its RUNPATH at the pyenv prefix; the official image uses /usr/local/lib.
for elf in "$ROOTFS/usr/local/bin/$PY" "$ROOTFS/usr/local/bin/${PY}m" "$ROOTFS"/usr/local/lib/libpython3*.so.*; do
    [ -f "$elf" ] && [ ! -L "$elf" ] && patchelf --set-rpath /usr/local/lib "$elf"
done
# pip's and other scripts' shebangs name the pyenv prefix.
grep -rlI "^#!$PYTHON_SRC/bin/python" "$ROOTFS/usr/local/bin" | while read -r script; do
    sed -i "1s|^#!$PYTHON_SRC/bin/python.*|#!/usr/local/bin/$PY|" "$script"
done
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*

tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PYTHON_VERSION=$PYTHON_VERSION" \
    --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
docker run --rm "$TAG" python -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib; print("stand-in", "'"$TAG"'", "ready")'
