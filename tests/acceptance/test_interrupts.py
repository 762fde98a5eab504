"""Interrupts never leave a TensorFlow session unusable: in a kernel (Jupyter's interrupt, hundreds of times, then
the same session used) and in `tf1kernel run` (cold here; in a standby in test_run_standby.py). Real engine, real
TF 1.15."""

from __future__ import annotations

import queue
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from tests.conftest import install_variant
from tests.interrupts import INTERRUPTED_TRAINING_SCRIPT, LOCK_TRAP, SESSION_CELL, TRAINING_CELL, USE_SESSION_CELL
from tests.kernels import execute, running_kernel, wait_reply
from tests.runs import tf1kernel_run

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("no_leaks")]

KERNEL_TRIES = 200
RUN_TRIES = 150
HUNG = 15  # seconds without an answer from a cell that uses the session: hung


@pytest.fixture(scope="module")
def kernel(tf1_kernel: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[KernelManager, BlockingKernelClient]]:
    with running_kernel(tf1_kernel, str(tmp_path_factory.mktemp("interrupts"))) as (manager, client):
        prepared = execute(client, SESSION_CELL + LOCK_TRAP)
        assert prepared.status == "ok", prepared
        yield manager, client


def interrupt_when_busy(manager: KernelManager, client: BlockingKernelClient, code: str, busy: str | None,
                        delay: float) -> dict:
    """Run a cell, interrupt it (as the stop button does) once it printed `busy` (or after delay), return its reply.
    stop_on_error off: the next cell then runs at once, as it does when a user runs it a moment later."""
    msg_id = client.execute(code, stop_on_error=False)
    deadline = time.monotonic() + 60
    while busy is not None:
        message = client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if message["parent_header"].get("msg_id") == msg_id and busy in message["content"].get("text", ""):
            break
    time.sleep(delay)
    manager.interrupt_kernel()
    return wait_reply(client, msg_id, timeout=HUNG)["content"]


def answers(client: BlockingKernelClient, code: str) -> str:
    try:
        result = execute(client, code, timeout=HUNG)
    except (TimeoutError, queue.Empty):
        raise AssertionError(f"hung: no answer within {HUNG} s to {code!r}") from None
    assert result.status == "ok", result
    return result.stdout


def test_hundreds_of_interrupts_of_a_training_cell_never_hang_the_next_cell(
        kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    manager, client = kernel
    random.seed(39)
    for attempt in range(KERNEL_TRIES):
        reply = interrupt_when_busy(manager, client, TRAINING_CELL, "training", random.uniform(0, 0.02))
        assert reply.get("ename") == "KeyboardInterrupt", (attempt, reply)
        assert "session answers True" in answers(client, USE_SESSION_CELL), attempt


def test_an_interrupt_inside_the_session_lock_is_held_back_until_it_is_safe(
        kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    """The trap sends SIGINT while GroupLock.acquire holds its condition: the KeyboardInterrupt still reaches the
    cell, as sess.run returns, and the session answers after. Without the guard the same trap hangs it (below)."""
    _, client = kernel
    result = execute(client, "arm_lock_trap()\nsess.run(step)", timeout=HUNG)
    assert result.ename == "KeyboardInterrupt", result
    # Shown as Python's own handler would leave it: ending in Session.run, not in the guard that raised it.
    assert "session.py" in result.traceback and "interrupts.py" not in result.traceback, result.traceback
    assert "session answers True" in answers(client, USE_SESSION_CELL)


def test_with_a_debuggers_tracer_the_interrupt_is_held_all_the_same_and_the_tracer_stays(
        kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    """JupyterLab's stop button with its debugger on (or after it, whose tracer debugpy leaves on the main thread)
    hung the next cell: the guard let a tracer's interrupt land in the lock. The trap, with a tracer of every frame
    as debugpy's: the session answers after, and the tracer is still the thread's."""
    _, client = kernel
    result = execute(client, "arm_lock_trap(debugger=True)\nsess.run(step)", timeout=HUNG)
    assert result.ename == "KeyboardInterrupt", result
    assert "tracer kept True" in answers(client, "print('tracer kept', _sys.gettrace() is _debugger)\n"
                                                 "_sys.settrace(None)")
    assert "session answers True" in answers(client, USE_SESSION_CELL)


def test_without_the_guard_the_same_trap_hangs_the_session(tf1_kernel: str, jupyter_dirs: Path,
                                                           tmp_path: Path) -> None:
    """The proof that the trap lands in the lock: in a kernel with hold_interrupts off, the next sess.run waits for
    ever (its own kernel, shut down after: the wait cannot be interrupted, SIGINT may reach another thread)."""
    unguarded = install_variant(jupyter_dirs, "tf1.15-unguarded", {"hold_interrupts": False})
    with running_kernel(unguarded, str(tmp_path)) as (_, client):
        assert execute(client, SESSION_CELL + LOCK_TRAP).status == "ok"
        assert execute(client, "arm_lock_trap()\nsess.run(step)", timeout=HUNG).ename == "KeyboardInterrupt"
        msg_id = client.execute(USE_SESSION_CELL, stop_on_error=False)
        with pytest.raises(AssertionError, match="no reply"):
            wait_reply(client, msg_id, timeout=5)


@pytest.mark.parametrize("compat_kernel", ["amd64"], indirect=True)
def test_the_guard_holds_in_the_compat_kernel_too(compat_kernel: str, tmp_path: Path) -> None:
    """TF 2.15's tf.compat.v1 sessions take the same GroupLock: the trap leaves the session usable there too."""
    with running_kernel(compat_kernel, str(tmp_path)) as (_, client):
        prepared = execute(client, "import tensorflow.compat.v1 as tf\ntf.disable_v2_behavior()\n"
                                   "x = tf.Variable(0.0)\nstep = tf.assign_add(x, 1.0)\n"
                                   "sess = tf.Session()\nsess.run(tf.global_variables_initializer())\n" + LOCK_TRAP)
        assert prepared.status == "ok", prepared
        result = execute(client, "arm_lock_trap()\nsess.run(step)", timeout=HUNG)
        assert result.ename == "KeyboardInterrupt" and "interrupts.py" not in result.traceback, result
        assert "session answers True" in answers(client, USE_SESSION_CELL)


@pytest.mark.parametrize(("name", "setup", "training", "after"), [
    ("MonitoredSession",
     "g1 = tf.Graph()\nwith g1.as_default():\n"
     "    gstep = tf.train.get_or_create_global_step()\n    train = tf.assign_add(gstep, 1)\n"
     "    monitored = tf.train.MonitoredSession()\n",
     "print('training', flush=True)\nwhile True:\n    monitored.run(train)\n",
     "print('answers', monitored.run(gstep) > 0)"),
    ("Estimator",
     "import numpy as np\n"
     "def input_fn():\n"
     "    features = ({'x': np.ones((8, 2), 'float32')}, np.ones((8, 1), 'float32'))\n"
     "    return tf.data.Dataset.from_tensors(features).repeat()\n"
     "estimator = tf.estimator.LinearRegressor([tf.feature_column.numeric_column('x', shape=(2,))], "
     "model_dir='estimator-model')\n",
     "print('training', flush=True)\nestimator.train(input_fn, steps=10**9)\n",
     "print('answers', len(estimator.predict(input_fn, yield_single_examples=False).__next__()['predictions']) > 0)"),
    ("Keras fit in graph mode",
     "import numpy as np\n"
     "model = tf.keras.Sequential([tf.keras.layers.Dense(4, input_shape=(2,)), tf.keras.layers.Dense(1)])\n"
     "model.compile('sgd', 'mse')\n",
     "print('training', flush=True)\nmodel.fit(np.ones((64, 2)), np.ones((64, 1)), epochs=10**6, verbose=0)\n",
     "print('answers', model.predict(np.ones((1, 2))).shape == (1, 1))"),
])
def test_interrupted_training_loops_stay_usable(kernel: tuple[KernelManager, BlockingKernelClient], name: str,
                                                 setup: str, training: str, after: str) -> None:
    manager, client = kernel
    answers(client, setup)
    for attempt in range(5):
        reply = interrupt_when_busy(manager, client, training, "training", 0.3 + 0.2 * attempt)
        assert reply.get("ename") == "KeyboardInterrupt", (name, attempt, reply)
        assert "answers True" in answers(client, after), (name, attempt)


def test_a_with_session_block_interrupted_and_left_then_a_new_session(
        kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    manager, client = kernel
    block = ("with tf.Session() as block:\n    block.run(x.initializer)\n    print('training', flush=True)\n"
             "    while True:\n        block.run(step)\n")
    for attempt in range(5):
        reply = interrupt_when_busy(manager, client, block, "training", 0.05 * attempt)
        assert reply.get("ename") == "KeyboardInterrupt", (attempt, reply)
        assert "answers True" in answers(client, "with tf.Session() as fresh:\n    fresh.run(x.initializer)\n"
                                                    "    print('answers', fresh.run(x) == 0)")


def test_tf1kernel_run_survives_hundreds_of_interrupts(tf1_kernel: str, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(INTERRUPTED_TRAINING_SCRIPT)
    ran = tf1kernel_run(tf1_kernel, "python", "train.py", str(RUN_TRIES), cwd=tmp_path, timeout=300)
    assert_survived(ran, preloaded=False)


def assert_survived(ran: subprocess.CompletedProcess, preloaded: bool) -> None:
    """INTERRUPTED_TRAINING_SCRIPT's lines: every interrupt and the trap left the session usable."""
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for line in (f"preloaded {preloaded}", "guarded True", f"recovered {RUN_TRIES} of {RUN_TRIES}",
                 "trap interrupted", "after the trap True", "new session True"):
        assert line in ran.stdout, ran.stdout + ran.stderr
