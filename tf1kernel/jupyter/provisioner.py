"""The jupyter_client kernel provisioner: one kernel, one container.

kernel.json names this class through ``metadata.kernel_provisioner``; its ``config`` block (or a traitlets config
file, for example ``c.DockerProvisioner.image = ...`` in ``jupyter_server_config.py``) sets the options of
:mod:`tf1kernel.config.options`. The kernel's :class:`~tf1kernel.session.KernelSession` does the work (``pre_launch``
is its request; ``launch_kernel`` its prepare, start and connect, in a worker thread); this class adapts it to
jupyter_client's lifecycle, and an unreachable engine is handled by :mod:`tf1kernel.jupyter.outage`.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from requests.exceptions import RequestException

from tf1kernel.config.options import KernelOptions
from tf1kernel.engine.client import EngineError, EngineRefused, engine_error
from tf1kernel.engine.container import LOOPBACK, ContainerState, KernelContainer
from tf1kernel.engine.ports import free_ports
from tf1kernel.engine.spec import CONTAINER_PORTS, ContainerSpec, Network
from tf1kernel.errors import ContainerStartError, EngineUnavailable, InvalidOption, Tf1KernelError, TunnelError
from tf1kernel.jupyter import adoption, sessions
from tf1kernel.jupyter.deaths import CAUSE_LINES, cause_of_death
from tf1kernel.jupyter.guest_report import GuestReport
from tf1kernel.jupyter.outage import EngineWatch, LostKernel, first_line
from tf1kernel.jupyter.replay import LinkReplay
from tf1kernel.placement.base import Placement, answers_on_this_machine, any_free_ports
from tf1kernel.planning import strategies
from tf1kernel.planning.strategies import avx_fix
from tf1kernel.session import KernelSession, Requested, kernelspec_name

# A dead kernel's last lines of output: the cause of death is read from the last CAUSE_LINES (deaths.py), and a
# death with no known cause is reported with all REPORTED_LINES (a crash's stacks of every thread take 50 to 100:
# about ten threads, more while the boot's timers are pending, and faulthandler's first line, which names the
# signal).
REPORTED_LINES = 150


class DockerProvisioner(KernelOptions, KernelProvisionerBase):  # type: ignore[misc]
    """Runs ipykernel inside a Docker container of a TensorFlow 1.15 image."""

    # Told to the user in the next kernel (why the previous one died).
    notice: str = ""
    _session: KernelSession | None = None
    # Stands for the kernel when a restart could not reach the engine.
    _lost: LostKernel | None = None
    _watch: EngineWatch | None = None
    _host_ports: dict[str, int] | None = None
    # Jupyter asked this kernel to end (shutdown, restart, kill): its exit needs no explaining.
    _end_asked: bool = False
    _guest_report: GuestReport = GuestReport()  # replaced per instance at its first launch
    _requested: Requested | None = None  # pre_launch's request, which launch_kernel starts
    _claim: adoption.Claim | None = None  # a detached kernel to adopt instead of starting one
    _link_replay: LinkReplay | None = None  # a remote kernel of a server: what it sent while its link was cut

    # -- lifecycle -----------------------------------------------------------

    @property
    def session(self) -> KernelSession:
        if self._session is None:
            self._session = KernelSession(self, self.kernel_id or "", kernelspec_name(self.kernel_spec),
                                          self.kernel_spec.env if self.kernel_spec else (), self.log,
                                          self._manager_ports)
        return self._session

    @property
    def container(self) -> KernelContainer | LostKernel | None:
        return self._lost or self.session.container

    @property
    def spec(self) -> ContainerSpec | None:
        """What the next launch starts (set by pre_launch), or the one that runs."""
        return self.session.spec

    @property
    def choice(self) -> strategies.Choice | None:
        """What the last launch ran, and why (auto's choice, or the configured strategy)."""
        return self.session.choice

    @property
    def kernel_placement(self) -> Placement | None:
        """Where the kernel runs, across its restarts; decided at the first launch, from the engine."""
        return self.session.placement

    @property
    def last_heard(self) -> str:
        """The msg_id of the last IOPub message this server heard of a kernel that outlives a cut link ("")."""
        return self._link_replay.last_heard if self._link_replay is not None else ""

    @property
    def engine_key(self) -> str:
        """The kernel's engine (EngineInfo.key), once it was reached ("")."""
        info = self.session.info
        return info.key if info is not None else ""

    @property
    def engine_url(self) -> str:
        """The kernel's engine's address, once it was reached: two engines of one machine may share a key."""
        info = self.session.info
        return info.url if info is not None else ""

    @property
    def container_goes_as_it_ends(self) -> bool:
        """The engine removes the kernel's container as it ends (a warm pool's kernel): nothing is left to read why."""
        return self.container is not None and self.container.removed_as_it_exits

    @property
    def has_process(self) -> bool:
        return self.container is not None

    @property
    def watch(self) -> EngineWatch:
        if self._watch is None:
            self._watch = EngineWatch(self.kernel_id or "", self.engine_description(), self.log)
        return self._watch

    async def poll(self) -> int | None:
        if self.container is None:
            return 0
        if self.watch.given_up:
            return 1
        try:
            state = await asyncio.to_thread(self.container.state)
        except (EngineError, RequestException) as exc:
            return await self._engine_unreachable(exc)
        self.watch.answered()
        if state.running:
            await self._keep_open()
            if self._guest_report.due() and self.spec is not None:
                self._guest_report.tell(await asyncio.to_thread(self.container.logs), self.spec.image, self.log)
            return None
        if state.missing:
            self.log.warning("tf1kernel: container of kernel %s was removed outside Jupyter", self.kernel_id)
        if not self.notice:
            last_words = await asyncio.to_thread(self._last_words, state)
            self.notice = self._cause_of_death(state, "\n".join(last_words.splitlines()[-CAUSE_LINES:]))
            if self.notice:
                self.log.error("tf1kernel: kernel %s: %s", self.kernel_id, self.notice)
            elif not self._end_asked and state.exit_code:
                self._end_asked = True  # told once
                self.log.error("tf1kernel: kernel %s exited by itself with code %s; its last output:\n%s",
                               self.kernel_id, state.exit_code, last_words)
        return state.exit_code

    async def wait(self) -> int | None:
        exit_code = await self.poll()
        while exit_code is None:
            await asyncio.sleep(0.2)
            exit_code = await self.poll()
        await self._remove_container()
        return exit_code

    async def send_signal(self, signum: int) -> None:
        """Signals reach the kernel through the engine; without it there is no kernel to signal (its engine
        stopped it), and jupyter_client's shutdown, which interrupts first, must not fail on that."""
        if self.container is None or signum == 0:
            return
        try:
            await asyncio.to_thread(self.container.signal, signum)
        except (EngineError, RequestException) as exc:
            log = self.log.debug if self.watch.lost else self.log.warning  # the loss was told once already
            log("tf1kernel: could not signal kernel %s (%s); the engine is unreachable", self.kernel_id,
                first_line(exc))

    async def shutdown_requested(self, restart: bool = False) -> None:
        self._end_asked = True

    async def kill(self, restart: bool = False) -> None:
        self._end_asked = True
        await self.send_signal(signal.SIGKILL)  # it does not fail when the engine is away (which stops its kernels)

    async def terminate(self, restart: bool = False) -> None:
        self._end_asked = True
        await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        self._stop_link_replay()
        if not restart:
            self.watch.stop_waiting = True  # shut down while a restart waits for the engine: it starts nothing
        await self._remove_container()
        if not restart:
            self._host_ports = None
            self.session.end()
            if self.kernel_id:
                sessions.forget(self.kernel_id)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop("transport_encryption", None)  # ipykernel 6.16 (Python 3.7) has no CurveZMQ
        km = self.parent
        if km is not None and km.transport != "tcp":
            raise InvalidOption(f"tf1kernel kernels need the tcp transport, not {km.transport!r}.",
                                "remove the `transport` setting from your Jupyter configuration")
        extra_arguments = kwargs.pop("extra_arguments", [])
        working_dir = kwargs.get("cwd") or os.getcwd()
        self._claim = adoption.claimed(self.kernel_id or "")
        if self._claim is not None and km is not None:
            # The kernel's own ports and key, from the connection file its dead server left: the same file again.
            km.load_connection_info(self._claim.connection)
            km.write_connection_file()
        kwargs = await super().pre_launch(**kwargs)
        self._requested = self.session.request(
            working_dir, kwargs["env"],
            session_key=km.session.key if km is not None else b"",
            signature_scheme=km.session.signature_scheme if km is not None else "hmac-sha256",
            kernel_arguments=extra_arguments, notice=self.notice, network=Network(host_ports=self._host_ports or {}),
            # A server's kernel (its KernelManager is one of a MultiKernelManager's) outlives the server's death;
            # a script's (nbclient, papermill, a console) ends with it as before.
            detachable=km is not None and km.parent is not None)
        kwargs["cmd"] = self._requested.spec.command
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        claim, self._claim = self._claim, None
        if claim is not None and self._requested is not None:
            ports = await asyncio.to_thread(self._requested.adopt, claim.container_id, claim.connection, claim.hold)
            self.log.info("tf1kernel: kernel %s adopted: its server was gone, and its container %s ran on",
                          self.kernel_id, claim.container_id[:12])
            return self._launched(ports)
        try:
            ports = await self._start()
        except (EngineUnavailable, TunnelError, EngineError, RequestException) as raw:
            exc = raw if isinstance(raw, Tf1KernelError) else self._engine_failure(raw)
            if not self.session.started_once:
                raise exc from None
            if not (isinstance(exc, EngineUnavailable) and await self.watch.returned(self.session.engine_answers)
                    and (ports := await self._started_again())):
                # A failed restart makes jupyter_client's restarter try again every 3 s without end; a kernel
                # that is dead at once lets it count its attempts and give up, with the reason in the log.
                self.log.error("tf1kernel: kernel %s could not be restarted: %s", self.kernel_id, exc)
                self._lost = LostKernel()
                return self.connection_info
        return self._launched(ports)

    async def _start(self) -> dict[str, int]:
        """Start the kernel where its placement says; return the ports of this machine's loopback it is on."""
        if self._requested is None:
            raise InvalidOption("jupyter_client launched a tf1kernel kernel without pre_launch.",
                                "start kernels through a KernelManager (its start_kernel calls pre_launch)")
        return await asyncio.to_thread(self._requested.launch)

    async def _started_again(self) -> dict[str, int] | None:
        """Start once more (the engine is back); None if that fails too."""
        try:
            return await self._start()
        except (Tf1KernelError, EngineError, RequestException) as exc:
            self.log.error("tf1kernel: kernel %s could not be started on the engine that came back: %s",
                           self.kernel_id, exc)
            return None

    def _launched(self, ports: dict[str, int]) -> KernelConnectionInfo:
        assert self.spec is not None and self.container is not None
        self.notice = ""
        self._end_asked = False
        self._guest_report = GuestReport()
        self._guest_report.started()
        self.watch.started()
        self._host_ports = self.container.host_ports
        self._listen_across_the_link(ports["iopub_port"])
        info = self.session.info
        remote = info.url if info and info.remote else ""
        self.log.info("tf1kernel: kernel %s runs in container %s (%s, %s%s); TensorBoard (%%tensorboard_tf1) at "
                      "http://%s:%s/", self.kernel_id, self.container.id[:12], self.spec.image, self.spec.platform,
                      f", on {remote}" if remote else "", LOOPBACK, ports["tensorboard_port"])
        info: dict[str, Any] = dict(self.parent.get_connection_info()) if self.parent else {}
        info.update(ip=LOOPBACK, transport="tcp", **{name: ports[name] for name in CONTAINER_PORTS})
        self.connection_info = info
        return self.connection_info

    def _engine_failure(self, exc: EngineError | RequestException) -> Tf1KernelError:
        """An engine call failed where no specific error was expected: say so, with the fix."""
        if isinstance(exc, EngineRefused):
            return ContainerStartError(f"The engine at {self.engine_description()} refused: {exc.explanation}",
                                       "see the message above; `tf1kernel doctor` checks the engine and the images")
        return engine_error(exc, self.engine_description())

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(
            container_id=self.container.id if self.container else None,
            host_ports=self._host_ports,
            image=self.spec.image if self.spec else self.image,
            strategy=self.choice.strategy if self.choice else self.strategy,
            docker_host=self.docker_host,
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        container_id, host_ports = provisioner_info.get("container_id"), provisioner_info.get("host_ports")
        problems = [
            "kernel_id or connection_info is missing" if not {"kernel_id", "connection_info"} <= set(provisioner_info)
            else "",
            "container_id is not a string" if container_id is not None and not isinstance(container_id, str) else "",
            "host_ports is not a mapping of port numbers" if host_ports is not None and not (
                isinstance(host_ports, dict) and all(isinstance(p, int) for p in host_ports.values())) else "",
        ]
        if any(problems):
            raise InvalidOption(
                f"The saved tf1kernel state of kernel {provisioner_info.get('kernel_id', '?')} is unusable: "
                f"{'; '.join(p for p in problems if p)}.",
                "start a new kernel; `tf1kernel gc` removes the old kernel's container",
            )
        await super().load_provisioner_info(provisioner_info)
        self._host_ports = host_ports
        if container_id:
            await asyncio.to_thread(self.session.adopt, container_id, self._host_ports or {})

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        # TensorFlow 1.15 under emulation takes far longer than a local kernel to come up.
        return max(recommended, 30.0)

    # -- what runs -----------------------------------------------------------

    def _manager_ports(self, fresh: bool) -> dict[str, int]:
        """The KernelManager's ports, chosen where no outgoing connection takes its port; new ones if fresh."""
        km = self.parent
        if km is None:
            return any_free_ports(fresh)
        if fresh:
            self.log.warning("tf1kernel: a port of kernel %s was taken since its last start; using new ports",
                             self.kernel_id)
            km.cleanup_connection_file()
            for name in CONTAINER_PORTS:
                setattr(km, name, 0)
        unset = [name for name in CONTAINER_PORTS if not getattr(km, name)]
        for name, port in zip(unset, free_ports(len(unset)), strict=True):
            setattr(km, name, port)  # not jupyter_client's own choice: see tf1kernel.engine.ports
        km.write_connection_file()
        return {name: getattr(km, name) for name in CONTAINER_PORTS}

    def _last_words(self, state: ContainerState) -> str:
        return self.container.logs(REPORTED_LINES) if self.container is not None and not state.missing else ""

    def _cause_of_death(self, state: ContainerState, last_words: str) -> str:
        info = self.session.info
        return cause_of_death(state, last_words, memory=self.memory, engine_memory=info.memory if info else 0,
                              image=self.spec.image if self.spec else self.image, python=self.python,
                              avx_fix=avx_fix(info.kind if info else "Linux engine"))

    # -- helpers -------------------------------------------------------------

    def engine_description(self) -> str:
        """The engine in the user's terms: docker_host's URL, or the context's name."""
        return self.session.engine_description()

    async def _keep_open(self) -> None:
        if self.kernel_placement is None:
            return
        # Nothing is heard from the kernel until the link is mended: what was heard last is known now.
        replay = self._link_replay
        heard = replay.mending() if replay is not None else None
        try:
            mended = await asyncio.to_thread(self.kernel_placement.keep_open)
        except TunnelError as exc:
            self.log.warning("tf1kernel: kernel %s: %s", self.kernel_id, exc.message)
            return
        if mended and replay is not None and heard is not None:
            replay.mended(heard)

    def _listen_across_the_link(self, iopub_port: int) -> None:
        """A server's kernel that outlives a cut link (a remote one): hear what it sends, to know what to have it
        send again once the link is mended."""
        self._stop_link_replay()
        spec, placement, km = self.spec, self.kernel_placement, self.parent
        if spec is None or placement is None or km is None or not placement.reconnects:
            return
        self.watch.detached_seconds = float(spec.lifetime.detached_idle_seconds + spec.lifetime.lease_seconds
                                            if spec.lifetime.detached_idle_seconds else 0)
        if self.watch.detached_seconds:
            self._link_replay = LinkReplay.listen(km, self.kernel_id or "", iopub_port, self.log)

    def _stop_link_replay(self) -> None:
        replay, self._link_replay = self._link_replay, None
        if replay is not None:
            replay.close()

    async def _remove_container(self) -> None:
        self._lost = None
        container = self.session.container
        try:
            await asyncio.to_thread(self.session.stop)
        except (EngineError, RequestException) as exc:
            log = self.log.debug if self.watch.lost else self.log.warning  # it goes with the engine's next start
            log("tf1kernel: could not remove container %s: %s", container.id[:12] if container else "?", exc)

    async def _engine_unreachable(self, exc: Exception) -> int | None:
        """Without its engine, the kernel itself may tell whether it runs (placement.answers)."""
        # A kernel loaded from saved state has no placement yet: it was started here, on this machine's engine.
        container, placement = self.container, self.kernel_placement
        answers = None
        if isinstance(container, KernelContainer):
            answers = await asyncio.to_thread(placement.answers if placement else answers_on_this_machine, container)
        return self.watch.unreachable(exc, answers)
