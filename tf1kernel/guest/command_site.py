"""The sitecustomize of `tf1kernel run`'s commands: each Python the command starts installs the interrupt guard
(interrupts.py, copied beside this file as tf1kernel_interrupts.py) once it has imported TensorFlow, then runs the
image's own sitecustomize, which this one would otherwise shadow.

Copied into the command's container and put first on PYTHONPATH by tf1kernel (engine/command.py). Every Python the
command starts reads it, so it must parse and stay silent on any of them (Python 2 included).
"""

import os
import sys


def guard_interrupts():
    if sys.version_info < (3, 6):
        return
    try:
        import tf1kernel_interrupts

        tf1kernel_interrupts.guard_scripts()
    except Exception:
        pass  # Python's own Ctrl-C then, as without tf1kernel: never an error at every start


def run_the_images_sitecustomize():
    if sys.version_info < (3, 4):
        return
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [folder for folder in sys.path if os.path.abspath(folder or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


guard_interrupts()
run_the_images_sitecustomize()
