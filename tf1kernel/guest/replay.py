"""What the kernel published while nobody listened, kept for the first client that comes back.

When the last IOPub subscriber goes (the Jupyter server died, or the link to it), ZeroMQ drops whatever the kernel
publishes, and the reply to a request whose sender is gone: a cell that runs on prints into the void. A link that
is cut without a word (a laptop's lid closed, a network gone) is worse: the kernel's messages go into the
connections of a remote sshd that nobody reads, and no subscriber leaves until that sshd notices.

So the Recorder keeps the last MOST_BYTES of what the kernel sent, in order: every IOPub message as it was sent (its
frames, signed: the same key verifies them) and the execute replies. It marks where nobody listened from: the last
subscriber's leaving, or, when the lease lapsed with subscribers still there (a silent cut), the last renewal.
A server asks for them on the control channel (REPLAY_REQUEST, answered in kernel.py):

- a server that adopted the kernel first asks which client (its session id, the tab's) sent the requests, then has
  what that client missed since the mark sent again: the IOPub messages published anew, the replies routed to
  that client's identity, in their original order and with their original parent headers; the server holds them
  for that client until it reconnects (jupyter/replay.py);
- a server whose link to a remote kernel came back names the last IOPub message it heard, and has everything
  after it sent again, to every client.

While the lease is overdue (nobody renewed it for a while: the link or the server may be gone) the kernel holds
back what it sends, IOPub messages and execute replies, keeping them only, until a server asks for them or the
renewals have been back for RELEASE_SECONDS. So a mended link, whose subscribers come back one by one, hears
nothing twice (jupyter_client's Session refuses a message it has seen: "Duplicate Signature") and nothing out of
order.

Bounded: MOST_BYTES of messages; beyond it the oldest go, and the replay begins with one line that says so.
"""

import collections
import json
import re
import threading
import time
import uuid

from jupyter_client.session import Session

MOST_BYTES = 8 * 1024 * 1024
REPLY_BYTES = 1024  # what a kept execute reply counts for (they are small)
# Messages published this long before the last renewal of a lease that then lapsed may not have reached anyone.
IN_FLIGHT_SECONDS = 1.0
# Held messages go out by themselves this long after the renewals are back, if no server asked for them first.
RELEASE_SECONDS = 10.0
DELIMITER = b"<IDS|MSG>"
MSG_ID = re.compile(rb'"msg_id"\s*:\s*"([^"]*)"')
UNKNOWN = -1  # how many were dropped, when that is not known


def parent_header(frames):
    """The parent header of a message, from its frames ({} if it has none)."""
    try:
        parent = json.loads(bytes(frames[frames.index(DELIMITER) + 3]).decode("utf-8"))
    except (ValueError, IndexError):
        return {}
    return parent if isinstance(parent, dict) else {}


def message_id(frames):
    """The msg_id of a message's own header, from its frames ("" if it has none)."""
    try:
        match = MSG_ID.search(bytes(frames[frames.index(DELIMITER) + 2]))
    except (ValueError, IndexError):
        return ""
    return match.group(1).decode("utf-8", "replace") if match else ""


def resigned(frames, session):
    """A kept message as it is sent again: the same, under a new msg_id and so a new signature. A client's Session
    refuses a signature it has seen ("Duplicate Signature"), and jupyter_server's stream that reads it stops
    there; a subscriber that heard the message before the link broke must not lose its stream for it."""
    index = frames.index(DELIMITER)
    header = json.loads(frames[index + 2].decode("utf-8"))
    header["msg_id"] = new_msg_id()
    parts = [session.pack(header), *frames[index + 3:index + 6]]
    return [*frames[:index + 1], session.sign(parts), *parts, *frames[index + 6:]]


def resent(message):
    """A kept execute reply as it is sent again (see resigned)."""
    return dict(message, header=dict(message["header"], msg_id=new_msg_id()))


def new_msg_id():
    return uuid.uuid4().hex


Entry = collections.namedtuple("Entry", "seq at frames reply size")  # reply: (message, identities), or None


class Recorder(object):
    """The last messages published and execute replies sent, and the first of them that nobody heard."""

    def __init__(self, most_bytes=MOST_BYTES, clock=time.monotonic):
        self.most_bytes = most_bytes
        self.clock = clock
        self.lock = threading.RLock()  # RecordingSession holds it while it sends a reply, and records it
        self.entries = collections.deque()  # oldest first
        self.seq_of = {}  # msg_id of a kept IOPub message -> its entry's seq (its latest sending)
        self.size = 0
        self.next_seq = 0
        self.unheard_from = None  # the seq of the first entry nobody heard; None while someone listens
        self.unheard_exact = False  # unheard_from is when the last subscriber left, not a lapse's estimate
        self.held_from = None  # the seq of the first entry held back; None while the kernel sends
        self.subscribed_at = collections.deque(maxlen=64)  # the seqs at which IOPub subscribers came, latest last
        # Sends what is held (the kernel's, in its IOPub thread); called once renewals are back and nobody asked.
        self.releaser = None
        self.release_seconds = RELEASE_SECONDS

    @property
    def recording(self):
        """Whether what is sent now goes unheard (nobody listens, or the lease lapsed)."""
        return self.unheard_from is not None

    @property
    def holding(self):
        return self.held_from is not None

    def nobody_listens(self):
        """The last subscriber left. (Over a link cut without a word that shows only once the link is back, after
        a hold's mark, which is kept.)"""
        with self.lock:
            if self.unheard_from is None:
                self.unheard_from, self.unheard_exact = self.next_seq, True

    def subscribed(self):
        """An IOPub subscriber came: it hears what is sent from here on."""
        with self.lock:
            self.subscribed_at.append(self.next_seq)

    def hold(self, renewed_at):
        """Nobody renewed the lease since renewed_at (this clock): hold back what is sent from now on; and, unless
        the last subscriber was seen leaving, take what was sent since shortly before then as unheard (a link cut
        without a word)."""
        with self.lock:
            if self.held_from is None:
                self.held_from = self.next_seq
            if self.unheard_from is None:
                since = renewed_at - IN_FLIGHT_SECONDS
                self.unheard_from = next((entry.seq for entry in self.entries if entry.at >= since), self.next_seq)

    def release(self):
        """The renewals are back and no server asked for what is held: the kernel sends it (releaser)."""
        if self.holding and self.releaser is not None:
            self.releaser()

    def publish(self, frames):
        """Keep an IOPub message; whether to send it now (not while holding)."""
        frames = [bytes(frame) for frame in frames]
        with self.lock:
            entry = self._add(frames, None, sum(len(frame) for frame in frames))
            msg_id = message_id(frames)
            if msg_id:
                self.seq_of[msg_id] = entry.seq
            return self.held_from is None

    def reply(self, message, identities):
        with self.lock:
            self._add(None, (message, identities), REPLY_BYTES)

    def _add(self, frames, reply, size):
        entry = Entry(self.next_seq, self.clock(), frames, reply, size)
        self.next_seq += 1
        self.entries.append(entry)
        self.size += size
        while self.size > self.most_bytes and len(self.entries) > 1:
            oldest = self.entries.popleft()
            self.size -= oldest.size
            if oldest.frames is not None:
                msg_id = message_id(oldest.frames)
                if self.seq_of.get(msg_id) == oldest.seq:
                    del self.seq_of[msg_id]
        return entry

    def sessions(self):
        """The clients (session ids) whose cells' messages went unheard, the last one's last: not those of requests
        that servers make (kernel_info, the replay's own), whose status messages are kept too."""
        with self.lock:
            unheard = [entry for entry in self.entries
                       if self.unheard_from is not None and entry.seq >= self.unheard_from]
        found = []
        for entry in unheard:
            session = session_of(entry)
            if session and entry_parent(entry).get("msg_type") == "execute_request":
                found = [seen for seen in found if seen != session] + [session]
        return found

    def take(self, session=None, after="", held=False):
        """What to send again, as (IOPub frames, replies, how many were dropped before them: UNKNOWN when not
        known): with `after`, everything sent after that IOPub message (the last one a server heard), to every
        client or to the client `session`; with `held`, what was held back; else what went unheard since the last
        subscriber left, for the client `session` (which is also preferred to `after`). Nobody listens
        no more from here, and nothing is held: call it where the kernel sends IOPub messages (its IOPub
        thread), and send what it returns at once, so nothing goes between."""
        with self.lock:
            oldest = self.entries[0].seq if self.entries else self.next_seq
            held_from, self.held_from = self.held_from, None
            if held:
                if held_from is None:
                    return [], [], 0
                start, dropped = held_from, max(0, oldest - held_from)
            elif self.unheard_exact and session is not None:  # the last subscriber was seen leaving
                start, dropped = self.unheard_from, max(0, oldest - self.unheard_from)
            elif after and after in self.seq_of:
                start, dropped = self.seq_of[after] + 1, 0
            elif after:
                start, dropped = oldest, UNKNOWN  # later than the oldest kept: more than MOST_BYTES went unheard
            elif self.unheard_from is not None:
                start, dropped = self.unheard_from, max(0, oldest - self.unheard_from)
            else:
                return [], [], 0
            end = self.next_seq
            if after and held_from is None:
                # Not held back: what was sent after a subscriber came back was heard by it (twice is refused).
                end = next((seq for seq in self.subscribed_at if seq > start), end)
            chosen = [entry for entry in self.entries if start <= entry.seq < end]
            self.unheard_from, self.unheard_exact = None, False
        if session is not None:
            chosen = [entry for entry in chosen if session_of(entry) == session]
        return ([entry.frames for entry in chosen if entry.frames is not None],
                [entry.reply for entry in chosen if entry.reply is not None], dropped)


def entry_parent(entry):
    return parent_header(entry.frames) if entry.frames is not None else entry.reply[0].get("parent_header", {})


def session_of(entry):
    return entry_parent(entry).get("session", "")


RECORDER = Recorder()


class RecordingSocket(object):
    """The IOPub thread's socket, which the Recorder hears as it sends."""

    def __init__(self, socket, recorder=RECORDER):
        self._socket = socket
        self._recorder = recorder

    def send_multipart(self, frames, *args, **kwargs):
        if self._recorder.publish(frames):
            return self._socket.send_multipart(frames, *args, **kwargs)
        return None

    def __getattr__(self, name):
        return getattr(self._socket, name)


class Unsent(object):
    """Where a held reply goes: nowhere (jupyter_client 7's Session.send fails without a stream)."""

    def send_multipart(self, *args, **kwargs):
        return None


UNSENT = Unsent()


class RecordingSession(Session):
    """The kernel's Session, which the Recorder hears as it sends an execute reply."""

    def send(self, stream, msg_or_type, *args, **kwargs):
        kind = msg_or_type.get("msg_type") if isinstance(msg_or_type, dict) else msg_or_type
        if kind != "execute_reply":
            return super().send(stream, msg_or_type, *args, **kwargs)
        with RECORDER.lock:  # held and kept, or sent and kept, with no take between
            if RECORDER.holding:
                stream = UNSENT  # made and kept only, sent when the hold ends
            message = super().send(stream, msg_or_type, *args, **kwargs)
            RECORDER.reply(message, kwargs.get("ident") if "ident" in kwargs else (args[2] if len(args) > 2 else None))
        return message


def dropped_notice(count):
    """The line a replay begins with when the oldest messages were dropped."""
    return {"name": "stderr", "text": "tf1kernel: %s earlier output message(s) were dropped while no client listened "
            "(a kernel keeps the last %d MB)\n" % ("some" if count == UNKNOWN else count, MOST_BYTES // (1024 * 1024))}
