"""The session's steps, without an engine: one order for every entry point, kept by the types, and what a failed
step leaves behind. In the spirit of gateway_provisioners' lifecycle checks; the real steps on a real engine are the
acceptance tests'. The engine, the placement and the planning are stand-ins here (pure logic only)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tf1kernel import session as session_module
from tf1kernel.config.options import KernelOptions
from tf1kernel.engine.command import CommandRequest
from tf1kernel.engine.info import EngineInfo
from tf1kernel.engine.spec import ContainerSpec, Lifetime, Network
from tf1kernel.errors import ContainerStartError, InvalidOption
from tf1kernel.placement.base import Fit, Placement
from tf1kernel.planning.strategies import Choice
from tf1kernel.session import KernelSession, Prepared, Requested, Started

INFO = EngineInfo(kind="Linux engine", arch="amd64", key="k", os="linux", server_version="26")
PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5, "tensorboard_port": 6}


@dataclasses.dataclass
class RecordedContainer:
    calls: list[str]
    kernel_id: str
    files_folder: str = ""

    def remove(self) -> None:
        self.calls.append("container.remove")


class RecordedPlacement(Placement):
    """Records each call the session makes of it; `fail` names the one that raises."""

    network = "host"

    def __init__(self, calls: Calls, fail: str = "") -> None:
        self.calls, self.fail = calls, fail

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise ContainerStartError(f"{name} failed", "the fix")

    def prepare(self, spec: ContainerSpec) -> ContainerSpec:
        self._call("placement.prepare")
        return spec

    def start(self, client: Any, spec: ContainerSpec) -> Any:
        self._call("placement.start")
        return RecordedContainer(self.calls, spec.kernel_id)

    def connect(self, container: Any, spec: ContainerSpec) -> dict[str, int]:
        self._call("placement.connect")
        return dict(PORTS)

    def for_frontend(self, frontend_ports: dict[str, int]) -> tuple[Network, Lifetime | None]:
        self._call("placement.for_frontend")
        return Network(host_ports=dict(frontend_ports), fixed_ports=True), Lifetime(exit_with_caller=True)

    def listen_for_frontend(self, frontend_ports: dict[str, int], spec: ContainerSpec) -> None:
        self._call("placement.listen_for_frontend")

    def command(self, client: Any, spec: ContainerSpec, request: CommandRequest) -> Any:
        self._call("placement.command")
        return f"command {request.argv}"

    def fits(self, client: Any, spec: ContainerSpec) -> Fit:
        self._call("placement.fits")
        return Fit(True, "here")


class Calls(list):
    """The calls, in order, and the placement that records its own among them."""

    placement: RecordedPlacement


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """The session's engine, placement and planning, replaced by stand-ins that record their calls in order."""
    recorded = Calls()
    placement = recorded.placement = RecordedPlacement(recorded)

    def resolve(options: Any, client: Any, info: Any, spec: ContainerSpec, placement: Placement, *args: Any,
                **kwargs: Any) -> tuple[ContainerSpec, Choice]:
        recorded.append("plan.resolve")
        return placement.prepare(spec), Choice("emulated", spec.image, "linux/amd64", "the kernelspec's", "1.15.5")

    def decide(*args: Any, **kwargs: Any) -> Choice:
        recorded.append("plan.decide")
        return Choice("emulated", "tf1", "linux/amd64", "the kernelspec's")

    def place(options: Any, info: Any, *args: Any) -> Placement:
        recorded.append("placement_for")
        return placement

    monkeypatch.setattr(KernelSession, "engine", lambda self: (recorded.append("engine") or "client", INFO))
    monkeypatch.setattr(session_module.plan, "resolve", resolve)
    monkeypatch.setattr(session_module.plan, "decide", decide)
    monkeypatch.setattr(session_module, "placement_for", place)
    monkeypatch.setattr(session_module, "reap_once", lambda *args: recorded.append("reap_once"))
    monkeypatch.setattr(session_module, "check_image", lambda client, spec: recorded.append("check_image") or "id")
    monkeypatch.setattr(session_module.strategies, "labelled_tensorflow", lambda client, image: "")
    return recorded


def new_session() -> KernelSession:
    return KernelSession(KernelOptions(strategy="emulated", image="tf1", platform="linux/amd64"), "k1", "tf1")


def steps(calls: list[str]) -> list[str]:
    return [call for call in calls if call != "engine"]


# -- each entry point's steps, in the one order --------------------------------------------------------------

def test_a_provisioner_start_requests_then_launches(calls: Calls) -> None:
    session = new_session()
    requested = session.request("/work", {}, session_key=b"k")
    assert steps(calls) == []  # a request never reaches the engine
    assert requested.launch() == PORTS
    assert steps(calls) == ["reap_once", "placement_for", "plan.resolve", "placement.prepare", "placement.start",
                            "placement.connect"]
    assert session.started_once and session.container == RecordedContainer(calls, "k1")


def test_a_restart_keeps_the_placement_of_the_first_start(calls: Calls) -> None:
    session = new_session()
    session.request("/work", {}, session_key=b"k").launch()
    calls.clear()
    session.stop()
    assert calls == ["container.remove"] and session.container is None
    session.request("/work", {}, session_key=b"k").launch()
    assert "placement_for" not in calls and session.placement is calls.placement


def test_a_frontends_ports_reach_the_placement_before_planning_and_its_listener_before_the_start(
        calls: Calls) -> None:
    session = new_session()
    started = session.request("/work", {}, session_key=b"k", frontend_ports=PORTS).prepare().start()
    started.connect()
    assert steps(calls) == ["placement_for", "placement.for_frontend", "plan.resolve", "placement.prepare",
                            "placement.listen_for_frontend", "placement.start", "placement.connect"]
    assert started.spec.network.fixed_ports and started.spec.lifetime.exit_with_caller
    assert started.spec.network.host_ports == PORTS


def test_a_command_and_doctor_share_the_description(calls: Calls) -> None:
    prepared = new_session().request("/work", {}, session_key=b"").prepare()
    described = prepared.describe()
    assert (described.image, described.image_id, described.strategy, described.fit) == ("tf1", "id", "emulated",
                                                                                        Fit(True, "here"))
    assert described.runs.startswith("TensorFlow 1.15.5") and not described.auto
    request = CommandRequest(["python", "x.py"])
    assert prepared.standby_for(request, described.image_id) is None  # run_standby is off
    assert prepared.command(request) == "command ['python', 'x.py']"
    assert steps(calls) == ["placement_for", "plan.resolve", "placement.prepare", "check_image", "placement.fits",
                            "placement.command"]


def test_an_adoption_places_and_connects_but_starts_nothing(calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    """A detached kernel adopted by the next server: reattached, placed and connected (its lease renewed again),
    held by this session; no planning, no start, no reaping."""

    def reattach(client: Any, container_id: str, connection: dict) -> tuple[Any, str, str]:
        calls.append("container.reattach")
        return RecordedContainer(calls, "k1", "/run/kernel-files"), "tf1:adopted", "linux/arm64"

    monkeypatch.setattr(session_module.KernelContainer, "reattach", reattach)
    session = new_session()
    hold = object()
    assert session.request("/work", {}, session_key=b"k", detachable=True).adopt("c1", {}, hold) == PORTS
    assert steps(calls) == ["placement_for", "container.reattach", "placement.connect"]
    assert session.started_once and session.hold is hold and session.spec.image == "tf1:adopted"
    assert session.spec.platform == "linux/arm64", "its server log names the platform it runs"
    assert session.spec.storage.files_folder == "/run/kernel-files", "its shutdown removes the folder it mounts"
    assert session.spec.lifetime.lease_seconds and session.spec.lifetime.detached_idle_seconds


def test_install_checks_without_placing(calls: Calls) -> None:
    assert new_session().request("/work", {}, session_key=b"").check().strategy == "emulated"
    assert steps(calls) == ["plan.decide"]


# -- the order is the types' ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("stage", "steps_it_has", "steps_it_lacks"), [
    (KernelSession, {"request", "stop", "end", "adopt"}, {"prepare", "start", "connect", "launch", "command",
                                                         "describe", "check"}),
    (Requested, {"prepare", "launch", "check", "adopt"}, {"start", "connect", "command", "describe"}),
    (Prepared, {"start", "command", "describe", "standby_for", "leave_standby"}, {"prepare", "connect", "launch",
                                                                                "check"}),
    (Started, {"connect"}, {"prepare", "start", "command", "describe", "launch"}),
])
def test_each_step_is_a_method_of_what_the_step_before_returned(stage: type, steps_it_has: set[str],
                                                                  steps_it_lacks: set[str]) -> None:
    assert all(callable(getattr(stage, name, None)) for name in steps_it_has)
    assert not any(hasattr(stage, name) for name in steps_it_lacks)


def test_a_stage_cannot_be_changed_after_the_fact(calls: Calls) -> None:
    requested = new_session().request("/work", {}, session_key=b"")
    with pytest.raises(dataclasses.FrozenInstanceError):
        requested.spec = requested.spec  # type: ignore[misc]


# -- what a failed step leaves ---------------------------------------------------------------------------------

def test_a_request_the_options_refuse_fails_before_the_engine(calls: Calls) -> None:
    session = KernelSession(KernelOptions(command_prefix=["qemu"], python="python"), "k1")
    with pytest.raises(InvalidOption, match="absolute path"):
        session.request("/work", {}, session_key=b"")
    assert calls == []


@pytest.mark.parametrize("failing", ["placement.prepare", "placement.start", "placement.listen_for_frontend"])
def test_a_failed_step_leaves_no_container_and_no_first_start(calls: Calls, failing: str) -> None:
    session = new_session()
    calls.placement.fail = failing
    with pytest.raises(ContainerStartError, match=failing):
        session.request("/work", {}, session_key=b"k", frontend_ports=PORTS).prepare().start().connect()
    assert session.container is None and not session.started_once
    assert calls[-1] == failing  # nothing ran after the step that failed


def test_a_failed_connect_leaves_the_container_for_stop_to_remove(calls: Calls) -> None:
    session = new_session()
    calls.placement.fail = "placement.connect"
    with pytest.raises(ContainerStartError):
        session.request("/work", {}, session_key=b"k").launch()
    assert session.container == RecordedContainer(calls, "k1") and not session.started_once
    session.stop()
    assert calls[-1] == "container.remove" and session.container is None
