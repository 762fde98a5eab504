"""What Colab-era TF1 notebooks ask of their kernel: Colab's `%tensorflow_version` magic, and `google.colab`.

When Colab dropped TensorFlow 1 (August 2022), its TF1 notebooks stopped working; their first cell is
`%tensorflow_version 1.x`, and many import google.colab to mount Drive or download files. Here the magic says which
TensorFlow this kernel runs (1.x is what it has; 2.x is another kernel), and google.colab, which exists only on
Colab, fails with what works here instead. Python 3.6+ syntax: it runs in the kernel's container.
"""

import os
import re
import sys

SELECTING_TF1 = ("1", "1.x", "1.15", "1.15.x")
SELECTING_TF2 = ("2", "2.x")
USAGE = "%tensorflow_version 1.x"
# The distributions that install the `tensorflow` module (TF's own, and the builds tf1kernel's images use).
DISTRIBUTIONS = re.compile(r"^(tensorflow|tensorflow_cpu|tensorflow_gpu|tensorflow_ascend|tensorflow_aarch64|"
                           r"intel_tensorflow|nvidia_tensorflow)-(\d[^-]*)\.(dist|egg)-info$", re.IGNORECASE)


def installed_tensorflow():
    """This Python's TensorFlow version, without importing it (that takes seconds); "" when there is none."""
    imported = sys.modules.get("tensorflow")
    if getattr(imported, "__version__", None):
        return imported.__version__
    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            match = DISTRIBUTIONS.match(name)
            if match:
                return match.group(2)
    return ""


def tensorflow_version(line):
    """%tensorflow_version 1.x: Colab's choice of TensorFlow, answered for this kernel (which has one TensorFlow)."""
    from IPython.core.error import UsageError

    wanted = line.strip()
    version = installed_tensorflow()
    if wanted in SELECTING_TF1:
        if version.startswith("1."):
            print("TensorFlow 1.x selected: this kernel runs TensorFlow {}.".format(version))
        elif version:
            print("TensorFlow 1.x selected: this kernel runs TensorFlow {}'s TF1 API (tf.compat.v1, "
                  "tf.disable_v2_behavior()).".format(version))
        else:
            print("TensorFlow 1.x selected.")
        return
    if wanted in SELECTING_TF2:
        if version.startswith("2."):
            raise UsageError(
                "This kernel runs TensorFlow {}'s TF1 API for TF1 code; it does not switch to TF2 behaviour as Colab "
                "did. For TF2 code, pick a TensorFlow 2 kernel.".format(version))
        raise UsageError(
            "This kernel runs TensorFlow {}; it cannot switch to TensorFlow 2 as Colab did. For TF2 code, pick a "
            "TensorFlow 2 kernel; for TF1 code on TensorFlow 2.15, the compat kernel (`tf1kernel install --strategy "
            "compat`).".format(version or "1.x"))
    raise UsageError("Usage: {} (Colab's choice of TensorFlow; this kernel runs TensorFlow {}).".format(
        USAGE, version or "1.x"))


class ColabOnly(object):
    """An import hook, last on sys.meta_path: google.colab, when nothing installed it, fails with what to use."""

    def find_spec(self, name, path=None, target=None):
        if name != "google.colab" and not name.startswith("google.colab."):
            return None
        raise ModuleNotFoundError(
            "google.colab exists only on Colab. Here: the notebook's folder is this kernel's working folder ({}), "
            "as on your machine, so read and write files by their path (no drive.mount); files.download and "
            "files.upload are JupyterLab's file browser (right-click > Download, or drag files in).".format(
                os.getcwd()), name=name)


def install_colab_hook():
    if not any(isinstance(finder, ColabOnly) for finder in sys.meta_path):
        sys.meta_path.append(ColabOnly())
