"""What the kernel published while nobody listened, kept for the first client that comes back.

When the last IOPub subscriber goes (the Jupyter server died, or the link to it), ZeroMQ drops whatever the kernel
publishes, and the reply to a request whose sender is gone: a cell that runs on prints into the void. From that
moment the Recorder keeps every IOPub message as it was sent (its frames, signed: the same key verifies them) and
the execute replies. A server that adopts the kernel asks for them on the control channel (REPLAY_REQUEST, answered
in kernel.py): first
to learn which client (its session id, the tab's) sent the requests, then to have them sent again, the IOPub
messages published anew and the replies routed to that client's identity, in their original order and with their
original parent headers. The server holds them for that client until it reconnects (jupyter/replay.py).

Bounded: MOST_BYTES of messages; beyond it the oldest go, and the replay begins with one line that says how many.
"""

import json
import threading

from jupyter_client.session import Session

MOST_BYTES = 8 * 1024 * 1024
DELIMITER = b"<IDS|MSG>"


def parent_header(frames):
    """The parent header of a message, from its frames ({} if it has none)."""
    try:
        parent = json.loads(bytes(frames[frames.index(DELIMITER) + 3]).decode("utf-8"))
    except (ValueError, IndexError):
        return {}
    return parent if isinstance(parent, dict) else {}


class Recorder(object):
    """The messages published, and the execute replies sent, since the last IOPub subscriber left."""

    def __init__(self, most_bytes=MOST_BYTES):
        self.most_bytes = most_bytes
        self.lock = threading.Lock()
        self.recording = False
        self.published = []  # frames of IOPub messages, oldest first
        self.replies = []  # (message, identities) of execute replies
        self.size = 0
        self.dropped = 0

    def nobody_listens(self):
        with self.lock:
            self.recording = True

    def publish(self, frames):
        if not self.recording:
            return
        frames = [bytes(frame) for frame in frames]
        with self.lock:
            if not self.recording:
                return
            self.published.append(frames)
            self.size += sum(len(frame) for frame in frames)
            while self.size > self.most_bytes and len(self.published) > 1:
                oldest = self.published.pop(0)
                self.size -= sum(len(frame) for frame in oldest)
                self.dropped += 1

    def reply(self, message, identities):
        if self.recording:
            with self.lock:
                self.replies.append((message, identities))

    def sessions(self):
        """The clients (session ids) whose cells' messages are kept, the last one's last: not those of requests
        that servers make (kernel_info, the replay's own), whose status messages are kept too."""
        with self.lock:
            parents = [parent_header(frames) for frames in self.published]
            parents += [message.get("parent_header", {}) for message, _ in self.replies]
        found = []
        for parent in parents:
            session = parent.get("session", "")
            if session and parent.get("msg_type") == "execute_request":
                found = [seen for seen in found if seen != session] + [session]
        return found

    def take(self, session):
        """What was kept for the client `session`, and how many messages were dropped; the rest is forgotten, and
        recording stops until nobody listens again."""
        with self.lock:
            published, replies, dropped = self.published, self.replies, self.dropped
            self.recording, self.published, self.replies, self.size, self.dropped = False, [], [], 0, 0
        return ([frames for frames in published if parent_header(frames).get("session") == session],
                [(message, identities) for message, identities in replies
                 if message.get("parent_header", {}).get("session") == session], dropped)


RECORDER = Recorder()


class RecordingSocket(object):
    """The IOPub thread's socket, which the Recorder hears as it sends."""

    def __init__(self, socket, recorder=RECORDER):
        self._socket = socket
        self._recorder = recorder

    def send_multipart(self, frames, *args, **kwargs):
        self._recorder.publish(frames)
        return self._socket.send_multipart(frames, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._socket, name)


class RecordingSession(Session):
    """The kernel's Session, which the Recorder hears as it sends an execute reply."""

    def send(self, stream, msg_or_type, *args, **kwargs):
        message = super().send(stream, msg_or_type, *args, **kwargs)
        if isinstance(message, dict) and message.get("msg_type") == "execute_reply":
            RECORDER.reply(message, kwargs.get("ident") if "ident" in kwargs else (args[2] if len(args) > 2 else None))
        return message


def dropped_notice(count):
    """The line a replay begins with when the oldest messages were dropped."""
    return {"name": "stderr", "text": "tf1kernel: %d earlier output message(s) were dropped while no client listened "
            "(a kernel keeps the last %d MB)\n" % (count, MOST_BYTES // (1024 * 1024))}
