"""The options of a tf1kernel kernel, declared once: traits with their help, and their validation.

The provisioner inherits them (kernel.json's ``metadata.kernel_provisioner.config``, or traitlets config such as
``c.DockerProvisioner.image = ...``); the argv launcher and doctor read the same kernel.json into options of
their own (``KernelSession.for_kernelspec``). A wrong value fails when the options are
made, with InvalidOption naming the option, where it was set and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from traitlets import Bool, Dict, Enum, Float, Int, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from tf1kernel.config.workdir import SYSTEM_FOLDERS, SYSTEM_TREES, is_within, parse_mount
from tf1kernel.engine.spec import gpu_selection, memory_bytes
from tf1kernel.errors import InvalidOption
from tf1kernel.images.recipes import check_image_reference

DEFAULT_ENV_ALLOWLIST = [
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "JPY_SESSION_NAME",
    "PYTHONHASHSEED",
    "PYTHONWARNINGS",
    "PYTHONUNBUFFERED",
    # TensorFlow's own variables, not every TF_ one: terraform's (TF_CLI_CONFIG_FILE, TF_TOKEN_*, TF_VAR_*...) hold
    # paths and secrets of this machine. A user who wants another one lists it.
    "TF_CPP_*",
    "TF_ENABLE_*",
    "TF_DISABLE_*",
    "TF_FORCE_*",
    "TF_GPU_*",
    "TF_CUDNN_*",
    "TF_USE_CUDNN*",
    "TF_NUM_*_THREADS",
    "TF_XLA_FLAGS",
    "TF_DETERMINISTIC_OPS",
    "TF_AUTOTUNE_THRESHOLD",
    "TF_CONFIG",
    "TF2_BEHAVIOR",
    "OMP_NUM_THREADS",
]
MINIMUM_MEMORY_BYTES = 128 * 1024**2  # below this, Python and TensorFlow cannot even start
STRATEGIES = ("auto", "emulated", "source", "prebuilt", "compat")
MAX_POOL_SIZE = 16
MAX_RUN_STANDBY_SECONDS = 24 * 3600
DEFAULT_DETACHED_IDLE_SECONDS = 24 * 3600
# Passed by jupyter_client (or traitlets) to every provisioner, besides the options.
FRAMEWORK_ARGUMENTS = frozenset({"kernel_id", "kernel_spec", "parent", "config", "log"})


class KernelOptions(LoggingConfigurable):
    """What a kernelspec (or traitlets config) may set for its kernels."""

    strategy = Enum(
        list(STRATEGIES),
        "auto",
        config=True,
        help="How TensorFlow 1.15 runs. emulated: the official x86-64 wheel (linux/amd64; emulated on ARM64 hosts). "
        "source: TF 1.15 compiled for linux/arm64. prebuilt: the TF 1.x image named by `image`. compat: TF 2.15's "
        "TF1 API, native. auto: the best one built on the engine, with the reason in the log.",
    )
    image = Unicode(
        "",
        config=True,
        help="The kernel image: a Python with ipykernel and TensorFlow. Empty: the strategy's own image, "
        "built by `tf1kernel build --strategy STRATEGY` (prebuilt needs one).",
    )
    platform = Enum(
        ["", "linux/amd64", "linux/arm64"],
        "",
        config=True,
        help="The image's platform. Empty: the strategy's (emulated: linux/amd64, source: linux/arm64, "
        "compat: the engine's own; auto decides). linux/amd64 runs emulated on ARM64 engines.",
    )
    pull = Enum(
        ["never", "missing"],
        "never",
        config=True,
        help="When the kernel's image, from a registry (REGISTRY/NAME, or by digest as `tf1kernel install --image` "
        "records it), is not on the engine: never pull it at a start (the start fails at once with the command "
        "that pulls it), or pull it when missing (minutes: the server log shows its progress, and the kernel's "
        "first output says it was pulled).",
    )
    check_avx = Bool(
        True,
        config=True,
        help="Before starting a linux/amd64 kernel, check that its CPU (or emulator) offers AVX, which TensorFlow's "
        "x86-64 wheels need, and refuse to start with the fix if not. Off: the kernel starts, and "
        "`import tensorflow` raises an ImportError that explains.",
    )
    quiet_deprecations = Bool(
        True,
        config=True,
        help="Hide TensorFlow's own deprecation notices (\"The name tf.Session is deprecated...\", \"... is deprecated "
        "and will be removed in a future version\", the seven-line notice of the first `tf.contrib` use), with "
        "TensorFlow's switches for them: in a TF1 kernel they are noise. Every other warning and log line stays. "
        "False shows them.",
    )
    hold_interrupts = Bool(
        True,
        config=True,
        help="Make an interrupt (the stop button, Ctrl-C in `tf1kernel run`) safe for TensorFlow's sessions: while "
        "TensorFlow's session or graph-locking code runs, the KeyboardInterrupt waits until that code returns (for a "
        "training loop, until the running Session.run returns: when Python would raise it anyway). Without it, one "
        "interrupt in about 150 left the session's lock held, and the next sess.run waited for ever. False raises it "
        "wherever it lands, as plain Python does.",
    )
    preload_tensorflow = Bool(
        True,
        config=True,
        help="Shorten the first `import tensorflow` in a warm pool's kernels: standby kernels import TensorFlow "
        "before they are adopted. Nothing is made with it (no "
        "graph, session or device), so user code sees what it would see otherwise, except that environment "
        "variables TensorFlow reads during its import (TF2_BEHAVIOR, TF_ENABLE_CONTROL_FLOW_V2) must then be set "
        "in the kernelspec's `env`, not in a cell, for pool kernels. False loads nothing ahead.",
    )
    python = Unicode(
        "python",
        config=True,
        help="The Python interpreter inside the image that runs `-m ipykernel_launcher`.",
    )
    command_prefix = List(
        Unicode(),
        [],
        config=True,
        help="Run the kernel's Python through this command inside the container, such as an emulator "
        '(["/opt/qemu/qemu-x86_64-static", "-cpu", "max"]). Empty: run it directly.',
    )
    network = Enum(
        ["auto", "host", "bridge"],
        "auto",
        config=True,
        help="host: the kernel shares the host's network and listens on 127.0.0.1 itself (no NAT, no docker-proxy; "
        "a local Linux engine only). bridge: it has its own network and the engine publishes its ports on "
        "127.0.0.1. auto: host where the engine allows it, bridge elsewhere (Docker Desktop, VMs, remote engines). "
        "In bridge mode the kernel is on tf1kernel's own engine network, where no other container can reach it.",
    )
    dns = List(
        Unicode(),
        [],
        config=True,
        help="Name servers (IP addresses) the kernel's resolver asks, such as a company's own; the kernel then runs "
        "in bridge mode (Docker takes no name servers for a container on the host's network). Empty: the engine's.",
    )
    network_access = Bool(
        True,
        config=True,
        help="Let the kernel reach other machines: PyPI for `%pip install`, datasets, remote file systems. False: "
        "nothing it sends leaves this host (bridge mode on the `tf1kernel-offline` network, ports still on "
        "127.0.0.1; Docker engines only, as Podman publishes no ports of such a network).",
    )
    docker_host = Unicode(
        "",
        config=True,
        help="Docker engine URL (unix://, tcp://, ssh://). Empty: DOCKER_HOST, then the current docker context.",
    )
    docker_context = Unicode(
        "",
        config=True,
        help="Docker context to use (see `docker context ls`), when docker_host is empty.",
    )
    placement = Enum(
        ["engine", "swarm"],
        "engine",
        config=True,
        help="engine: the kernel is a container on the engine that docker_host/docker_context names (this machine's "
        "or a remote one). swarm: it is a one-replica service of the Docker Swarm that engine manages, placed on a "
        "node of the strategy's architecture that fits swarm_constraints, memory and cpus; it listens on that "
        "node's 127.0.0.1, reached through SSH (see swarm_ssh).",
    )
    swarm_constraints = List(
        Unicode(),
        [],
        config=True,
        help='With placement swarm: placement constraints besides the architecture, such as ["node.labels.tf1==yes"] '
        "(as `docker service create --constraint` takes them).",
    )
    swarm_ssh = Dict(
        value_trait=Unicode(),
        default_value={},
        config=True,
        help='With placement swarm: how to reach a node through SSH, by its hostname or address ({"gpu1": '
        '"me@gpu1.lab"}). Nodes not listed are reached at the address swarm knows them by, as ssh\'s own '
        "configuration says. The node the Jupyter server runs on needs none.",
    )
    ssh_host = Unicode(
        "",
        config=True,
        help="[user@]host whose loopback a remote engine's kernel ports are published on, reached by an SSH "
        "tunnel. Empty: the host of an ssh:// engine (a tcp:// engine needs it set).",
    )
    remote_workdir = Unicode(
        "",
        config=True,
        help="On a remote engine: the folder of the remote host the kernel works in (mounted at its own path). "
        "Empty: the named volume `work_volume`, mounted at /work. This machine's folders are never there.",
    )
    work_volume = Unicode(
        "tf1kernel-work",
        config=True,
        help="On a remote engine without remote_workdir: the named volume the kernel works in, kept across kernels.",
    )
    lease_seconds = Int(
        30,
        config=True,
        help="How long a kernel waits for tf1kernel to renew its lease. A Jupyter server's kernel whose server died, "
        "or whose link to its remote engine or swarm is lost, detaches then (see detached_idle_timeout); other "
        "kernels (a script's) exit, and the engine removes their container. Once 40% of it has passed without a "
        "renewal, a kernel holds back what it sends until a server reconnects, so that nothing arrives twice.",
    )
    detached_idle_timeout = Int(
        DEFAULT_DETACHED_IDLE_SECONDS,
        config=True,
        help="Seconds a kernel whose Jupyter server died without stopping it (killed, out of memory, its terminal "
        "closed), or whose link to its remote engine is lost, waits, detached and idle, for its server to reconnect "
        "or the user's next server to adopt it; then it stops. A running cell keeps it alive however long it runs. "
        "Default 24 hours: a training left overnight is still there the next day. 0: such a kernel ends with its "
        "lease. Kernels of scripts (nbclient, papermill) do not detach; the argv launcher (VS Code) stops its kernel "
        "once idle for this long after VS Code itself is gone.",
    )
    user = Unicode(
        "",
        config=True,
        help="uid:gid the kernel runs as. Empty: the uid:gid of the user running Jupyter, "
        "so that files the kernel writes belong to them.",
    )
    memory = Unicode(
        "",
        config=True,
        help="Memory limit of the kernel container, such as 4g or 512m. Empty: no limit.",
    )
    cpus = Float(
        0.0,
        config=True,
        help="CPU limit of the kernel container in cores, such as 1.5. 0: no limit.",
    )
    gpus = Unicode(
        "",
        config=True,
        help="GPUs for the kernel: `all`, a count such as 2, or device ids such as 0,1 (or GPU UUIDs). Empty: none. "
             "Each engine gets them its own way: Docker's device requests (as `docker run --gpus`, through the NVIDIA "
             "Container Toolkit), a swarm's NVIDIA-GPU generic resources (a count), Podman's CDI devices "
             "(nvidia.com/gpu=..., from `nvidia-ctk cdi generate`).",
    )
    mounts = List(
        Unicode(),
        [],
        config=True,
        help='Extra folders to mount, as "HOST:CONTAINER" or "HOST:CONTAINER:ro". '
        "The kernel's working directory is always mounted at its own path.",
    )
    pool_size = Int(
        0,
        config=True,
        help="Kernel containers kept started ahead of time for this kernelspec, so that a start only adopts one "
        "(faster than a local ipykernel; see docs/performance.md). Each idle one holds a Python with ipykernel "
        "loaded. 0: none.",
    )
    pool_root = Unicode(
        "",
        config=True,
        help="With pool_size: the folder the pool's containers mount, at its own path. Notebooks below it start "
        "from the pool, others start cold. Empty: the Jupyter server's working directory.",
    )
    pool_idle_timeout = Int(
        1800,
        config=True,
        help="With pool_size: seconds without a kernel start after which the pool's standby kernels are removed, "
        "giving back their memory (about 130 MiB each); the next start is cold and fills the pool again. The "
        "default, 30 minutes, keeps the pool through a working session's pauses and frees it when the work has "
        "stopped. 0: never.",
    )
    run_standby = Int(
        0,
        config=True,
        help="`tf1kernel run` only: after a command, keep a container like the next one's started, its Python with "
        "TensorFlow imported, for this many seconds; the next command of this kernel in the same folder and "
        "terminal starts in it at once (see docs/using.md for what a script then sees). Each idle one holds "
        "about 130 MiB; at most two per user. 0: none.",
    )
    pip_ca_bundle = Unicode(
        "",
        config=True,
        help="The CA bundle (a PEM file of this machine) that pip in the kernel trusts, for `%pip install` behind a "
        "TLS-intercepting proxy. Empty: the one this machine's pip uses (PIP_CERT, pip config, REQUESTS_CA_BUNDLE, "
        "SSL_CERT_FILE), if any. none: pip's own.",
    )
    env_allowlist = List(
        Unicode(),
        DEFAULT_ENV_ALLOWLIST,
        config=True,
        help="Names (fnmatch patterns) of server environment variables passed into the container. "
        "Variables set in the kernelspec's `env` are always passed.",
    )


    def __init__(self, **kwargs: Any) -> None:
        # What jupyter_client itself passes, plus the options a kernelspec may set.
        accepted = set(self.class_trait_names(config=True)) | FRAMEWORK_ARGUMENTS
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise InvalidOption(
                f"Unknown tf1kernel option(s) {', '.join(unknown)} in {self._config_source(kwargs)}.",
                f"use only: {', '.join(sorted(self.class_trait_names(config=True)))}",
            )
        for name, value in kwargs.items():
            # traitlets would quietly turn a string into a list of its characters.
            if isinstance(self.class_traits().get(name), List) and not isinstance(value, (list, tuple)):
                raise InvalidOption(f"tf1kernel option {name} in {self._config_source(kwargs)} must be a list, "
                                    f"not {value!r}.", f'write it as a JSON list, for example ["{value}"]')
        source = self._config_source(kwargs)
        if not self.has_trait("kernel_spec"):  # options alone (a session's): the kernelspec only names the source
            kwargs.pop("kernel_spec", None)
        try:
            super().__init__(**kwargs)
        except TraitError as exc:
            raise InvalidOption(f"Bad tf1kernel option in {source}: {exc}",
                                "correct the value (see `tf1kernel list`)") from None

    @staticmethod
    def _config_source(kwargs: dict[str, Any]) -> str:
        spec = kwargs.get("kernel_spec")
        where = getattr(spec, "resource_dir", "") if spec else ""
        return f"{where}/kernel.json metadata.kernel_provisioner.config" if where else "the provisioner config"

    @validate("image")
    def _valid_image(self, proposal: dict[str, Any]) -> str:
        return check_image_reference(proposal["value"]) if proposal["value"] else ""

    @validate("memory")
    def _valid_memory(self, proposal: dict[str, Any]) -> str:
        value: str = proposal["value"].strip()
        size = memory_bytes(value)
        if value and size is None:
            raise TraitError(f"memory must look like 4g or 512m, not {value!r}")
        if size is not None and size < MINIMUM_MEMORY_BYTES:
            raise TraitError(f"memory {value!r} is too small for a TensorFlow kernel; use at least 128m")
        return value

    @validate("gpus")
    def _valid_gpus(self, proposal: dict[str, Any]) -> str:
        value: str = proposal["value"].strip()
        try:
            gpu_selection(value)
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return value

    @validate("mounts")
    def _valid_mounts(self, proposal: dict[str, Any]) -> list[str]:
        for text in proposal["value"]:
            parse_mount(text)
        return list(proposal["value"])

    @validate("swarm_constraints")
    def _valid_swarm_constraints(self, proposal: dict[str, Any]) -> list[str]:
        for text in proposal["value"]:
            if "==" not in text and "!=" not in text:
                raise TraitError(f'swarm_constraints are like "node.labels.KEY==VALUE" (or !=), not {text!r}')
        return list(proposal["value"])

    @validate("dns")
    def _valid_dns(self, proposal: dict[str, Any]) -> list[str]:
        for text in proposal["value"]:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise TraitError(f"dns lists name servers by IP address, such as 10.0.0.2; not {text!r}") from None
        return list(proposal["value"])

    @validate("remote_workdir")
    def _valid_remote_workdir(self, proposal: dict[str, Any]) -> str:
        value: str = proposal["value"]
        if value and (not value.startswith("/") or value in SYSTEM_FOLDERS or is_within(value, SYSTEM_TREES)):
            raise TraitError(f"remote_workdir must be an absolute path outside the system folders, not {value!r}")
        return value

    @validate("lease_seconds")
    def _valid_lease(self, proposal: dict[str, Any]) -> int:
        value: int = proposal["value"]
        if value < 5:
            raise TraitError(f"lease_seconds must be at least 5, not {value}")
        return value

    @validate("detached_idle_timeout")
    def _valid_detached_idle(self, proposal: dict[str, Any]) -> int:
        value: int = proposal["value"]
        if value < 0:
            raise TraitError(f"detached_idle_timeout must be 0 (end with the server) or more seconds, not {value}")
        return value

    @validate("pool_size")
    def _valid_pool_size(self, proposal: dict[str, Any]) -> int:
        value: int = proposal["value"]
        if not 0 <= value <= MAX_POOL_SIZE:
            raise TraitError(f"pool_size must be 0 (no pool) to {MAX_POOL_SIZE}, not {value}")
        return value

    @validate("pool_idle_timeout")
    def _valid_pool_idle_timeout(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise TraitError(f"pool_idle_timeout must be 0 (never) or a number of seconds, not {value}")
        return value

    @validate("run_standby")
    def _valid_run_standby(self, proposal: dict[str, Any]) -> int:
        value: int = proposal["value"]
        if not 0 <= value <= MAX_RUN_STANDBY_SECONDS:
            raise TraitError(f"run_standby must be 0 (none) to {MAX_RUN_STANDBY_SECONDS} seconds, not {value}")
        return value

    @validate("cpus")
    def _valid_cpus(self, proposal: dict[str, Any]) -> float:
        value: float = proposal["value"]
        if value < 0:
            raise TraitError(f"cpus must be 0 (no limit) or a positive number of cores, not {value}")
        return value

    @validate("user")
    def _valid_user(self, proposal: dict[str, Any]) -> str:
        value: str = proposal["value"]
        # ASCII digits only: str.isdigit() also accepts "¹" and other digits int() refuses.
        if value and not re.fullmatch(r"[0-9]+(:[0-9]+)?", value):
            raise TraitError(f"user must be numeric uid or uid:gid, not {value!r}")
        return value
