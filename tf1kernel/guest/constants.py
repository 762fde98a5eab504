"""What the host (tf1kernel) and the guest (this package, in the kernel's container) both know.

The one place for the paths of the kernel's files in the container, the flags and variables that pass
tf1kernel's options to the guest, and the lines the guest writes for tf1kernel to read. The guest runs on the
image's Python (3.6+): plain constants only.
"""

# The kernel's files, at the container's root so that no user mount can shadow them.
CONNECTION_DIR = "/.tf1kernel"
CONNECTION_FILE = CONNECTION_DIR + "/connection.json"
NOTICE_FILE = CONNECTION_DIR + "/notice.txt"  # why the previous kernel died: shown with the first cell
AVX_FIX_FILE = CONNECTION_DIR + "/avx-fix.txt"  # the fix to name when the CPU lacks AVX
TENSORBOARD_ADDRESS_FILE = CONNECTION_DIR + "/tensorboard.json"  # {"url", "host", "port"} for %tensorboard_tf1
# Renewed by tf1kernel while a remote kernel's link holds (remote.py); the kernel exits when it stops changing.
LEASE_FILE = CONNECTION_DIR + "/lease"
# This package, zipped: `python -c BOOT` imports it from there.
GUEST_ARCHIVE = CONNECTION_DIR + "/tf1kernel_guest.zip"
GUEST_PACKAGE = "tf1kernel_guest"
TENSORBOARD_PORT = 6006  # where TensorBoard listens in the container, published like the kernel's ports

# Flags on the kernel's command line (the guest removes them before ipykernel sees its arguments).
# The kernel exits when its stdin closes (kernels of the argv launcher: their lifeline).
LIFELINE_FLAG = "--tf1kernel-lifeline"
# The kernel loads everything, then waits for one line on stdin that says which kernel to become (a warm pool).
STANDBY_FLAG = "--tf1kernel-standby"
# --tf1kernel-lease=SECONDS: the kernel exits when LEASE_FILE has not changed for that long.
LEASE_FLAG = "--tf1kernel-lease"
# --tf1kernel-detached-idle=SECONDS: when the lease lapses, the kernel detaches instead of exiting, and exits once
# it has been idle (no cell running) for that long while detached.
DETACHED_IDLE_FLAG = "--tf1kernel-detached-idle"

# Variables of the kernel's environment that carry tf1kernel's options.
QUIET_DEPRECATIONS_VARIABLE = "TF1KERNEL_QUIET_DEPRECATIONS"  # "0" shows TensorFlow's deprecation notices
PRELOAD_TENSORFLOW_VARIABLE = "TF1KERNEL_PRELOAD_TENSORFLOW"  # "0": standby kernels do not import TensorFlow
HOLD_INTERRUPTS_VARIABLE = "TF1KERNEL_HOLD_INTERRUPTS"  # "0": an interrupt lands wherever it lands (interrupts.py)
NETWORK_ACCESS_VARIABLE = "TF1KERNEL_NETWORK_ACCESS"  # "0" in a kernel without network access, for %pip to say
PACKAGES_KEPT_VARIABLE = "TF1KERNEL_PACKAGES_KEPT"  # "1" when %pip installs into a kept folder
# Set (kernelspec `env`): the boot's steps are logged as "tf1kernel-boot STEP UNIX_TIME" (profile_start.py).
BOOT_TIMES_VARIABLE = "TF1KERNEL_BOOT_TIMES"

# A server that adopted a kernel asks it, on the control channel, for what it published while no client listened
# (guest/replay.py, jupyter/replay.py).
REPLAY_REQUEST = "tf1kernel_replay_request"
REPLAY_REPLY = "tf1kernel_replay_reply"

# Lines the guest writes to the container's log, which tf1kernel reads.
STANDBY_READY_LINE = "tf1kernel-standby ready"  # a standby kernel has loaded everything
# "tf1kernel-lease detached|attached|busy|idle|expired AT_UNIX IDLE_SINCE_UNIX": a kernel's lease state, written to
# the container's log when it changes (`tf1kernel list` reads them); "detached" is followed by "busy" or "idle".
LEASE_STATE_LINE = "tf1kernel-lease"
CANNOT_LISTEN_LINE = "tf1kernel: the kernel cannot listen on"  # then the address and the reason
LEFT_OUT_LINE = "tf1kernel-guest: left out"  # a speed-up or fix for versions other than this image's
BOOT_STEP_LINE = "tf1kernel-boot"
