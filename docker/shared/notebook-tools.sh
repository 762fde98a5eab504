#!/bin/sh
# The shell tools TF1 notebooks call from their cells (`!git clone`, `!wget`, `!unzip`, `!curl`), as Colab had
# them, installed by whatever package manager the image has (as root, in a build), without their manuals,
# translations or the package manager's download cache.
#   sh notebook-tools.sh
# An image with no known package manager keeps going without the tools: the image check says which are missing.
set -eu
TOOLS="git wget unzip curl"
missing=""
for tool in $TOOLS; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
[ -n "$missing" ] || exit 0
if command -v apt-get >/dev/null 2>&1; then
    # Only the packages installed here skip their documentation: the image's own files stay as they are.
    printf 'path-exclude=/usr/share/%s/*\n' doc man locale info > /etc/dpkg/dpkg.cfg.d/tf1kernel-no-docs
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing ca-certificates >/dev/null
    apt-get clean
    rm -rf /var/lib/apt/lists/* /etc/dpkg/dpkg.cfg.d/tf1kernel-no-docs
elif command -v apk >/dev/null 2>&1; then
    apk add --no-cache $missing ca-certificates >/dev/null
elif command -v microdnf >/dev/null 2>&1; then
    microdnf install -y --setopt=tsflags=nodocs $missing ca-certificates >/dev/null && microdnf clean all >/dev/null
elif command -v dnf >/dev/null 2>&1; then
    dnf install -y -q --setopt=tsflags=nodocs $missing ca-certificates && dnf clean all >/dev/null
elif command -v yum >/dev/null 2>&1; then
    yum install -y -q --setopt=tsflags=nodocs $missing ca-certificates && yum clean all >/dev/null
else
    echo "notebook-tools: no package manager here; still missing:$missing" >&2
fi
