"""Start a kernel as another (non-root) user and write a file from it.

Run by test_files_belong_to_a_non_root_host_user as root. The interpreter lives
in root's private folders, so one full kernel cycle runs first as root to load
every module; then the process drops to uid:gid (keeping the docker group for
the engine socket) and the provisioner sees exactly what it would see for that user.
"""

from __future__ import annotations

import grp
import os
import sys
import tempfile

from tests.kernels import execute, running_kernel

kernel_name, workdir, uid, gid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
user_runtime_dir = os.environ["JUPYTER_RUNTIME_DIR"]
user_ipython_dir = os.environ.pop("IPYTHONDIR", None)

with tempfile.TemporaryDirectory() as root_dir:
    os.chmod(root_dir, 0o755)  # a rootless engine (Podman) mounts it as its user
    os.environ["JUPYTER_RUNTIME_DIR"] = root_dir
    # Else the root cycle makes the user's ~/.ipython (jupyter_client asks IPython for its kernels folder),
    # and IPython, finding it unwritable as the user, makes a temporary folder that nobody removes.
    os.environ["IPYTHONDIR"] = os.path.join(root_dir, "ipython")
    with running_kernel(kernel_name, root_dir) as (_, client):
        execute(client, "pass")

os.environ["JUPYTER_RUNTIME_DIR"] = user_runtime_dir
os.environ.pop("IPYTHONDIR")
if user_ipython_dir is not None:
    os.environ["IPYTHONDIR"] = user_ipython_dir
os.setgroups([grp.getgrnam("docker").gr_gid])
os.setgid(gid)
os.setuid(uid)
with running_kernel(kernel_name, workdir) as (_, client):
    result = execute(client, "import os, tensorflow as tf\nopen('owned.txt', 'w').write('mine')\n"
                             "print('TensorFlow', tf.__version__, tf.Session().run(tf.constant(6) * 7))\n"
                             "print(os.getuid(), os.getgid())")
print(result.stdout.strip())
