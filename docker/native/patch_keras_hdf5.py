"""Let TF 1.15's Keras read HDF5 files through h5py 3: run once at image build (Python 3.6+).

Why: h5py 2.10, which TF 1.15 was made for, has no wheel for aarch64. With h5py 3, string
attributes come back as str, and TF 1.15's Keras calls .decode() on them, so
`tf.keras.models.load_model("model.h5")` fails with "'str' object has no attribute 'decode'".
TensorFlow 2.4 fixed this upstream by decoding only bytes; this backports that to the eight
calls in tensorflow_core/python/keras/saving/hdf5_format.py of TensorFlow 1.15.x.
Targets TensorFlow 1.15.0 to 1.15.5; with any other file content it stops the build.

Usage: python patch_keras_hdf5.py PREFIX   (the --prefix TensorFlow was installed into)
"""

import os
import re
import sys
import sysconfig

HELPER = '''

def _tf1kernel_str(value):
  """bytes from h5py 2, str from h5py 3 (patched in by tf1kernel: TF 2.4's fix, backported)."""
  return value.decode('utf-8') if hasattr(value, 'decode') else value
'''
CALL = re.compile(r"([A-Za-z_][\w.]*(?:\[[^\]]*\])?)\.decode\('utf-?8'\)")
EXPECTED_CALLS = 8


def main(prefix):
    site = sysconfig.get_path("purelib", vars={"base": prefix, "platbase": prefix})
    path = os.path.join(site, "tensorflow_core", "python", "keras", "saving", "hdf5_format.py")
    with open(path, encoding="utf-8") as stream:
        source = stream.read()
    if "_tf1kernel_str" in source:
        return
    patched, calls = CALL.subn(r"_tf1kernel_str(\1)", source)
    anchor = "\nfrom tensorflow.python.util import serialization\n"
    if calls != EXPECTED_CALLS or anchor not in patched:
        sys.exit("patch_keras_hdf5: %s is not TF 1.15's (%d decode calls, expected %d)" % (path, calls,
                                                                                          EXPECTED_CALLS))
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(patched.replace(anchor, anchor + HELPER, 1))
    print("patched %d decode calls in %s for h5py 3" % (calls, path))


if __name__ == "__main__":
    main(sys.argv[1])
