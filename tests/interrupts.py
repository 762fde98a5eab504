"""Interrupts of TF1 training, as users write it: the cells and scripts the interrupt tests run (a KeyboardInterrupt
caught, then the same session used again), and the trap that interrupts TensorFlow's session lock while it is held."""

from __future__ import annotations

# A kernel's session and a training step (the cells below use them).
SESSION_CELL = ("import tensorflow as tf\n"
                "x = tf.Variable(0.0)\nstep = tf.assign_add(x, 1.0)\n"
                "sess = tf.Session()\nsess.run(tf.global_variables_initializer())\n")
TRAINING_CELL = "print('training', flush=True)\nwhile True:\n    sess.run(step)\n"
USE_SESSION_CELL = "print('session answers', sess.run(x) > 0)"

# Arms a one-shot trap: the next time the main thread holds the condition inside TensorFlow's GroupLock.acquire
# (lock_util.py), a SIGINT is sent to that thread (sent to the process, another thread could take it a moment later,
# when the main thread is out of the window). Python's own handler raises the KeyboardInterrupt right there,
# with the lock's condition held: the next Session.run on that graph waits for ever. (A trap, not luck: the window
# is a few bytecodes wide, and random interrupts land in it about once in 150.)
LOCK_TRAP = '''
import inspect as _inspect, signal as _signal, sys as _sys, threading as _threading
from tensorflow.python.util import lock_util as _lock_util
_lines, _first = _inspect.getsourcelines(_lock_util.GroupLock.acquire)
_held_from = _first + next(i for i, line in enumerate(_lines) if "self._ready.acquire()" in line)

_debugging = []

def _debugger(frame, event, arg):  # as a debugger's tracer (debugpy's) does: every frame traced
    return _debugger

def _in_acquire(frame, event, arg):
    if event == "line" and frame.f_lineno > _held_from:
        _sys.settrace(_debugger if _debugging else None)
        frame.f_trace = _debugger if _debugging else None
        _signal.pthread_kill(_threading.get_ident(), _signal.SIGINT)  # to this thread: handled before it goes on
        return None
    return _in_acquire

def _calls(frame, event, arg):
    code = frame.f_code
    if code.co_name == "acquire" and code.co_filename.endswith("lock_util.py"):
        return _in_acquire
    return _debugger if _debugging else None

def arm_lock_trap(debugger=False):
    _debugging[:] = [True] if debugger else []
    _sys.settrace(_calls)
'''

# `tf1kernel run SCRIPT TRIES`: whether TensorFlow was imported before it ran (a standby's), then a training loop
# interrupted TRIES times by SIGINT (sent by a thread after 5-30 ms, so that it lands anywhere in a Session.run),
# each time followed by a sess.run in `except KeyboardInterrupt:`, as users write it. A watchdog ends the script
# with status 7 if that sess.run hangs. Then the lock trap, and a `with tf.Session()` block interrupted and left,
# then a new session.
INTERRUPTED_TRAINING_SCRIPT = "import sys\nPRELOADED = 'tensorflow' in sys.modules\n" + LOCK_TRAP + '''
import os, random, signal, sys, threading, time
import tensorflow as tf

def watched(what, call):
    watchdog = threading.Timer(15, lambda: (print("hung:", what, flush=True), os._exit(7)))
    watchdog.start()
    try:
        return call()
    finally:
        watchdog.cancel()

tries = int(sys.argv[1])
x = tf.Variable(0.0)
step = tf.assign_add(x, 1.0)
sess = tf.Session()
sess.run(tf.global_variables_initializer())
print("preloaded", PRELOADED, flush=True)
print("guarded", signal.getsignal(signal.SIGINT) is not signal.default_int_handler, flush=True)
asks, asked = os.pipe()

def interrupter():  # one SIGINT 5-30 ms after each byte (a write is one C call: no KeyboardInterrupt lands in it)
    while os.read(asks, 1):
        time.sleep(random.uniform(0.005, 0.03))
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=interrupter, daemon=True).start()
recovered = 0
for attempt in range(tries):
    try:
        os.write(asked, b"x")
        while True:
            sess.run(step)
    except KeyboardInterrupt:
        watched("try %d" % attempt, lambda: sess.run(x))
        recovered += 1
print("recovered", recovered, "of", tries, flush=True)

arm_lock_trap()
try:
    sess.run(step)
    print("trap missed", flush=True)
except KeyboardInterrupt:
    print("trap interrupted", flush=True)
print("after the trap", watched("after the trap", lambda: sess.run(x)) > 0, flush=True)

try:
    os.write(asked, b"x")
    with tf.Session() as block:
        block.run(x.initializer)
        while True:
            block.run(step)
except KeyboardInterrupt:
    pass
with tf.Session() as fresh:
    fresh.run(x.initializer)
    print("new session", watched("new session", lambda: fresh.run(x)) == 0, flush=True)
'''
