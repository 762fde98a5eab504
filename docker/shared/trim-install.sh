#!/bin/sh
# Make a TensorFlow 1.x install tree smaller without changing what runs (in a throwaway stage).
#   sh trim-install.sh /install
# - Debug symbols out of TensorFlow's shared libraries (65 MB). Only TensorFlow's: stripping the
#   libraries that auditwheel vendored and patchelf rewrote (h5py.libs, numpy.libs) breaks them
#   ("ELF load command address/offset not page-aligned"), and with them `import h5py`.
# - TensorFlow's C++ headers (34 MB): they serve to compile custom ops, and the image has no compiler.
set -eu
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null
find "$1" -type f -path '*/tensorflow_core/*' -name '*.so*' \
    -exec sh -c 'strip --strip-unneeded "$@" 2>/dev/null || true' sh {} +
rm -rf "$1"/lib/python3*/site-packages/tensorflow_core/include
