"""`%pip` in a tf1kernel kernel, as a local venv kernel has it (imported after the boot).

Why it exists: the image's site-packages is not writable by the kernel's user, so pip installs with
--user, into PYTHONUSERBASE. IPython 7.34's %pip (IPython/core/magics/packaging.py) just runs pip:
- a user site folder that did not exist when Python started is not on sys.path, so the package cannot
  be imported until a restart. After pip, the folder is put on sys.path, ahead of the image's packages.
- pip may replace TensorFlow or numpy/protobuf under it (a package that wants TensorFlow 2), which breaks
  the kernel. Every pip in the kernel (`%pip`, `!pip`) gets constraints that pin the image's own versions
  of PROTECTED (PIP_CONSTRAINT, written once in the background after the boot), and a refusal names
  the package that wanted another version.
- a kernel without network access (the network_access option) says so at once, instead of letting pip
  retry a resolver that is not there.
tf1kernel mounts a folder per kernelspec at PYTHONUSERBASE (a volume on remote engines), so that installed
packages stay across restarts (`tf1kernel packages list|reset`).
"""

import importlib
import os
import re
import shlex
import site
import subprocess
import sys

from .constants import NETWORK_ACCESS_VARIABLE, PACKAGES_KEPT_VARIABLE

# The kernel's own stack: the image's versions stay whatever a package asks for.
PROTECTED = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-ascend", "tensorflow-estimator",
             "tensorboard", "numpy", "protobuf", "h5py", "keras-applications", "keras-preprocessing", "ipykernel",
             "ipython", "pyzmq", "jupyter-client")
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-ascend")
_PROTECTED_NAME = "(?:" + "|".join(re.escape(name) for name in PROTECTED) + r")\b\S*"
# pip's "The conflict is caused by:" lines: "needs-tf2 1.0 depends on tensorflow>=2", "The user requested
# tensorflow==2.4" (and "The user requested (constraint) tensorflow==1.15.5", which is ours).
NEEDS_ANOTHER = re.compile(r"^\s*(\S+ \S+) depends on (" + _PROTECTED_NAME + ")", re.IGNORECASE | re.MULTILINE)
ASKED_FOR = re.compile(r"^\s*The user requested (" + _PROTECTED_NAME + ")", re.IGNORECASE | re.MULTILINE)
_told = set()


def installed_versions():
    """{distribution name: version} of what is installed, by the lowercase, dash-separated name."""
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7: the backport, which ipykernel 6's images carry
        import importlib_metadata as metadata
    versions = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name:
            versions.setdefault(name, dist.version)
    return versions


def protect_installed_stack():
    """Pin PROTECTED at their installed versions for every pip of this kernel; return the constraints file."""
    path = os.path.join(os.path.expanduser("~"), ".tf1kernel-pip-constraints.txt")
    current = os.environ.get("PIP_CONSTRAINT", "")
    if path in current.split():
        return path
    versions = installed_versions()
    pins = {name: versions[name] for name in PROTECTED if name in versions}
    # TensorFlow installed under another name (tensorflow-cpu, -ascend) is still the `tensorflow` packages ask for.
    for name in TENSORFLOW_DISTRIBUTIONS:
        if name in pins:
            pins.setdefault("tensorflow", pins[name])
    with open(path, "w") as f:
        f.write("".join("{}=={}\n".format(name, version) for name, version in sorted(pins.items())))
    os.environ["PIP_CONSTRAINT"] = " ".join(filter(None, [current, path]))
    return path


def user_site_on_path():
    """Put the user site folder on sys.path, ahead of the image's packages, if it exists and is not there."""
    folder = site.getusersitepackages()
    if not os.path.isdir(folder) or folder in sys.path:
        return
    system = [i for i, entry in enumerate(sys.path) if entry.endswith(("site-packages", "dist-packages"))]
    sys.path.insert(system[0] if system else len(sys.path), folder)
    site.addsitedir(folder)  # its .pth files; the folder is on the path already, so it is not appended again
    importlib.invalidate_caches()


def offline_install(args):
    """An install from an index in a kernel without network access (files and folders need none)."""
    if os.environ.get(NETWORK_ACCESS_VARIABLE) != "0" or not args or args[0] != "install":
        return False
    requirements = [arg for arg in args[1:] if not arg.startswith("-")]
    return any(not os.path.exists(arg) for arg in requirements)


def pip(line):
    """Run pip in the kernel's Python: `%pip install PACKAGE` (IPython's %pip, kept and protected by tf1kernel)."""
    args = shlex.split(line)
    if offline_install(args):
        print("tf1kernel: this kernel has no network access (network_access: false), so pip cannot reach a "
              "package index. Install from a wheel file in the notebook's folder, or use a kernel with "
              "network_access true.", file=sys.stderr)
        return
    protect_installed_stack()
    output = run([sys.executable, "-m", "pip", *args])
    user_site_on_path()
    if args and args[0] == "install":
        explain(output)


def run(command):
    """Run command, showing its output as it comes; return that output."""
    # pip is the image's, tested with the kernel's stack: its "A new release of pip is available" notice at the
    # end of every %pip is noise in a notebook.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                               bufsize=1, env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    lines = []
    try:
        for text in process.stdout:
            lines.append(text)
            print(text, end="", flush=True)
        process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    return "".join(lines)


def explain(output):
    """After an install: why pip refused one (the kernel's stack), or where the packages went."""
    wanted = NEEDS_ANOTHER.findall(output) + [("you", asked) for asked in ASKED_FOR.findall(output)]
    if wanted:
        versions = installed_versions()
        for package, requirement in wanted:
            name = re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            if name in TENSORFLOW_DISTRIBUTIONS:
                name = next((n for n in TENSORFLOW_DISTRIBUTIONS if n in versions), name)
            print("tf1kernel: {} asked for {}; this kernel keeps its own {} {}, which it needs. Pick a version "
                  "made for this kernel's TensorFlow, or another kernel.".format(
                      package, requirement, name, versions.get(name, "")), file=sys.stderr)
        return
    if "Successfully installed" in output and "kept" not in _told:
        _told.add("kept")
        if os.environ.get(PACKAGES_KEPT_VARIABLE) == "1":
            print("tf1kernel: installed for this kernelspec; kept across restarts (`tf1kernel packages list`, "
                  "`tf1kernel packages reset`).", file=sys.stderr)
        else:
            print("tf1kernel: installed for this kernel only: a restart starts from the image again "
                  "(packages are kept on local engines).", file=sys.stderr)
