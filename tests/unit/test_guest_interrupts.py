"""The interrupt guard's logic (guest/interrupts.py) on a stand-in for TensorFlow's session module: where it raises
at once, where it holds the KeyboardInterrupt back, and where it says it is left out. The real TensorFlow is
tested in tests/acceptance/test_interrupts.py."""

from __future__ import annotations

import importlib.util
import signal
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tf1kernel.guest import constants, interrupts

SESSION_SOURCE = """\
import sys

def run(during):
    during(sys._getframe())
    return "ran to its end"

class Session:
    def __init__(self, during):
        self.during = during

    def __del__(self):
        self.during(sys._getframe())
"""


@pytest.fixture
def fake_tensorflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """tensorflow_core's session module (a file, so that its frames name it) and its version module."""
    source = tmp_path / "session.py"
    source.write_text(SESSION_SOURCE)
    spec = importlib.util.spec_from_file_location("tensorflow_core.python.client.session", source)
    session = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(session)
    versions = types.ModuleType("tensorflow_core.python.framework.versions")
    versions.__version__ = "1.15.5"
    monkeypatch.setitem(sys.modules, session.__name__, session)
    monkeypatch.setitem(sys.modules, versions.__name__, versions)
    monkeypatch.delenv(interrupts.VARIABLE, raising=False)
    yield session
    sys.settrace(None)


def test_the_guard_shares_the_hosts_names() -> None:
    assert interrupts.VARIABLE == constants.HOLD_INTERRUPTS_VARIABLE
    assert interrupts.LEFT_OUT_LINE == constants.LEFT_OUT_LINE


def test_outside_tensorflow_it_raises_at_once(fake_tensorflow: types.ModuleType) -> None:
    with pytest.raises(KeyboardInterrupt):
        interrupts.InterruptGuard()(signal.SIGINT, sys._getframe())


def test_inside_the_session_it_raises_as_the_session_code_returns(fake_tensorflow: types.ModuleType) -> None:
    guard = interrupts.InterruptGuard()
    seen = []

    def interrupted_inside(frame: types.FrameType) -> None:
        guard(signal.SIGINT, frame)  # held back: no exception here
        seen.append("held")
        guard(signal.SIGINT, frame)  # a second press while held: the same interrupt
        seen.append("held once")

    with pytest.raises(KeyboardInterrupt):
        fake_tensorflow.run(interrupted_inside)
    assert seen == ["held", "held once"]
    assert guard.held_until is None and sys.gettrace() is None
    with pytest.raises(KeyboardInterrupt):  # and the next one, outside, raises at once again
        guard(signal.SIGINT, sys._getframe())


def test_with_a_debuggers_tracer_it_holds_all_the_same_and_the_debugger_traces_on(
        fake_tensorflow: types.ModuleType) -> None:
    """debugpy traces every frame, which makes the lock's Python code far slower, and an interrupt landing in it far
    likelier (JupyterLab's stop button with its debugger on hung the next cell). The guard holds the interrupt as
    without one, chaining the frame's own trace function; the debugger's tracer stays, and sees the frame's events."""
    guard = interrupts.InterruptGuard()
    events: list[tuple[str, str]] = []

    def local(frame: types.FrameType, event: str, _arg: object) -> object:
        events.append((frame.f_code.co_name, event))
        return local

    def debugger(frame: types.FrameType, event: str, _arg: object) -> object:
        return local if frame.f_code.co_name == "run" else None

    def interrupted_inside(frame: types.FrameType) -> None:
        guard(signal.SIGINT, frame)  # held back
        events.append(("interrupted_inside", "held"))

    sys.settrace(debugger)
    try:
        with pytest.raises(KeyboardInterrupt):
            fake_tensorflow.run(interrupted_inside)
        assert sys.gettrace() is debugger, "the debugger's tracer stays"
    finally:
        sys.settrace(None)
    assert guard.held_until is None
    # The debugger saw run's lines after the interrupt was held: the interrupt came as run returned.
    held = events.index(("interrupted_inside", "held"))
    assert ("run", "line") in events[held:] and sys.getprofile() is None, events


def test_an_interrupt_in_a_sessions_finalizer_is_raised_in_the_code_it_interrupted(
        fake_tensorflow: types.ModuleType) -> None:
    """`tf.Session().run(x)` in a loop drops a session each time: its __del__ runs in the loop's line. Raised as
    __del__ returns, the KeyboardInterrupt would only be printed ("Exception ignored in") and the loop run on."""
    guard = interrupts.InterruptGuard()
    seen = []

    def loop() -> None:
        fake_tensorflow.Session(lambda frame: guard(signal.SIGINT, frame))  # dropped at once: its __del__ runs
        seen.append("the loop went on")

    with pytest.raises(KeyboardInterrupt):
        loop()
    assert seen == [] and guard.held_until is None and sys.gettrace() is None


def test_a_version_it_is_not_written_for_is_left_out_with_one_line(fake_tensorflow: types.ModuleType,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    sys.modules["tensorflow_core.python.framework.versions"].__version__ = "2.16.1"
    guard = interrupts.InterruptGuard()
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            fake_tensorflow.run(lambda frame: guard(signal.SIGINT, frame))
    said = capfd.readouterr().err
    assert said.count(constants.LEFT_OUT_LINE + " interrupt-guard: TensorFlow 2.16") == 1, said


def test_turned_off_there_is_no_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(interrupts.VARIABLE, "0")
    assert interrupts.guard() is None


def test_a_reported_interrupt_ends_in_the_users_code_not_in_the_guard(fake_tensorflow: types.ModuleType) -> None:
    try:
        interrupts.InterruptGuard()(signal.SIGINT, sys._getframe())
    except KeyboardInterrupt as interrupt:
        trace = interrupt.__traceback__
    assert trace.tb_next is not None  # as raised: this frame, then the guard's
    shown = interrupts.without_guard_frames(trace)
    assert shown.tb_frame.f_code.co_name == "test_a_reported_interrupt_ends_in_the_users_code_not_in_the_guard"
    assert shown.tb_next is None


def test_the_safety_net_holds_once_more_then_raises_where_it_is(fake_tensorflow: types.ModuleType,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    """A held interrupt whose frame's return is not seen (its trace function was taken): the net's SIGINT traces the
    frame once more (and says so on stderr), and the net's next SIGINT raises it wherever the main thread is."""
    guard = interrupts.InterruptGuard()
    seen = []

    def net() -> None:  # what the timer does, at once
        guard.net_for = guard.held_until
        guard(signal.SIGINT, sys._getframe())

    def interrupted_inside(frame: types.FrameType) -> None:
        guard(signal.SIGINT, frame)
        frame.f_trace = None  # a tracer took ours
        net()
        seen.append("held once more")
        frame.f_trace = None
        net()
        seen.append("never")

    with pytest.raises(KeyboardInterrupt):
        fake_tensorflow.run(interrupted_inside)
    assert seen == ["held once more"] and guard.held_until is None
    said = capfd.readouterr().err
    assert "interrupt-guard: the interrupt held until run (session.py:4) returns was not raised" in said, said


def test_the_safety_nets_late_signal_is_not_a_second_interrupt(fake_tensorflow: types.ModuleType) -> None:
    """The net's SIGINT that lands after its interrupt was raised (the frame returned meanwhile) is ignored."""
    guard = interrupts.InterruptGuard()
    with pytest.raises(KeyboardInterrupt):
        fake_tensorflow.run(lambda frame: guard(signal.SIGINT, frame))
    guard.net_for = object()  # the timer's, sent for the frame that has returned
    guard(signal.SIGINT, sys._getframe())  # no KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):  # and a press after it is one
        guard(signal.SIGINT, sys._getframe())


def test_a_held_frame_that_returns_in_time_gets_no_net_signal(fake_tensorflow: types.ModuleType,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sent = []
    monkeypatch.setattr(interrupts, "MOST_HELD_SECONDS", 0.05)
    monkeypatch.setattr(interrupts.signal, "pthread_kill", lambda *args: sent.append(args))
    guard = interrupts.InterruptGuard()
    with pytest.raises(KeyboardInterrupt):
        fake_tensorflow.run(lambda frame: guard(signal.SIGINT, frame))
    time.sleep(0.2)
    assert sent == [] and guard.net_for is None
