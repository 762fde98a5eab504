"""This process's terminal, attached to a command container, so that the command behaves as a local process:
output streamed live (stdout and stderr apart without a TTY), stdin passed through, the window size followed,
Ctrl-C sent to the command (a second one stops it), SIGTERM and SIGHUP stopping it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator

from tf1kernel.engine.command import STDERR, Command, Exit, Streams, demultiplex

INTERRUPT = b"\x03"  # Ctrl-C, as a terminal in raw mode passes it on
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# The waiting thread wakes the loop with this when the command exits. Its default action does nothing, so a
# wake that arrives after the loop ended is harmless once the signals are unblocked.
WAKE = signal.SIGCONT
HANDLED_SIGNALS = (signal.SIGINT, *STOP_SIGNALS, signal.SIGWINCH, WAKE)
STOP_GRACE_SECONDS = 5
OUTPUT_GRACE_SECONDS = 5.0
EXIT_ENGINE_LOST = 255


class Attached:
    """One command container with this process's stdin, stdout and stderr, until the command exits."""

    def __init__(self, container: Command) -> None:
        self.container = container
        self.interrupts = 0
        self.stopping = False
        self.lost: Exception | None = None  # why the command's end could not be learnt
        self._exit: list[Exit] = []

    def run(self, launch: Callable[[], Streams]) -> Exit:
        """launch() the command (attached, then started: no output is lost), and stream until it exits."""
        # Blocked before any thread starts (threads inherit the mask): only the loop below takes these signals.
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            with raw_terminal(self.container.tty):
                streams = launch()
                self.follow_window()
                output = threading.Thread(target=self.copy_output, args=(streams.output,), name="tf1kernel-run-output",
                                          daemon=True)
                output.start()
                threading.Thread(target=self.copy_input, args=(streams.input,), name="tf1kernel-run-input",
                                 daemon=True).start()
                threading.Thread(target=self.wait_for_exit, name="tf1kernel-run-wait", daemon=True).start()
                while not self._exit:
                    received = signal.sigtimedwait(HANDLED_SIGNALS, 1.0)
                    if received is not None:
                        self.on_signal(received.si_signo)
                output.join(OUTPUT_GRACE_SECONDS)  # the last output, read after the exit
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        return self._exit[0]

    def wait_for_exit(self) -> None:
        try:
            self._exit.append(self.container.wait())
        except Exception as exc:  # the engine went away: the command's fate is unknown, and this ends anyway
            self.lost = exc
            self._exit.append(Exit(EXIT_ENGINE_LOST))
        signal.pthread_kill(threading.main_thread().ident, WAKE)

    def on_signal(self, signum: int) -> None:
        if signum == WAKE:
            return
        if signum == signal.SIGWINCH:
            self.follow_window()
        elif signum == signal.SIGINT:
            self.interrupt()
        else:
            self.stop()

    def interrupt(self) -> None:
        """Ctrl-C: the first interrupts the command (KeyboardInterrupt in Python), the second stops it."""
        self.interrupts += 1
        if self.interrupts == 1:
            self.container.signal(signal.SIGINT)
        else:
            self.stop()

    def stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.container.signal(signal.SIGTERM)
        timer = threading.Timer(STOP_GRACE_SECONDS, lambda: self.container.signal(signal.SIGKILL))
        timer.daemon = True
        timer.start()

    def follow_window(self) -> None:
        if self.container.tty:
            size = shutil.get_terminal_size()
            self.container.resize(size.lines, size.columns)

    def copy_input(self, connection: socket.socket) -> None:
        """stdin to the command; with a TTY, Ctrl-C bytes count as interrupts (the second stops it)."""
        try:
            while True:
                data = os.read(sys.stdin.fileno(), 65536)
                if not data:
                    break
                if self.container.tty and INTERRUPT in data:
                    self.interrupts += data.count(INTERRUPT)
                    if self.interrupts >= 2:
                        self.stop()
                connection.sendall(data)
        except OSError:
            return  # the container went, or stdin is closed
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_WR)  # end of input: the command reads EOF

    def copy_output(self, connection: socket.socket) -> None:
        def write(stream: int, data: bytes) -> None:
            target = sys.stderr.buffer if stream == STDERR else sys.stdout.buffer
            target.write(data)
            target.flush()

        try:
            if self.container.tty:
                while chunk := connection.recv(65536):
                    write(1, chunk)
            else:
                demultiplex(connection.recv, write)
        except OSError:
            return


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """stdin's terminal in raw mode (the container's TTY interprets the keys), restored however this ends."""
    if not enabled or not sys.stdin.isatty():
        yield
        return
    descriptor = sys.stdin.fileno()
    saved = termios.tcgetattr(descriptor)
    try:
        tty.setraw(descriptor)
        yield
    finally:
        termios.tcsetattr(descriptor, termios.TCSADRAIN, saved)
