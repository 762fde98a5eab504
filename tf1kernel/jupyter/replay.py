"""An adopted kernel's missed output, handed to the client that missed it (the server's side of guest/replay.py).

jupyter_server keeps what a kernel sends while a client's websocket is closed, for that client, and hands it over
when the client reconnects with the same session id: a reload or a lost connection does not lose output. A server
that died took that buffer with it. So, once a server has adopted a kernel, it asks the kernel which client
missed messages, opens that client's channels (a shell socket with the client's identity, as jupyter_server opens
them), starts jupyter_server's own buffering for it (MappingKernelManager.start_buffering, its public method),
and asks the kernel to send the messages again. The still-open tab reconnects within seconds (JupyterLab and
Notebook 7 retry for a minute or two) and jupyter_server replays them to it, with their original parent headers:
the cell shows its whole output, its execution count and its end.

A remote kernel's link can be cut without a word (a laptop's lid closed, a network gone): the server lives on, and
so do the tabs' websockets, but what the kernel sent meanwhile went into a connection nobody reads. LinkReplay
listens to the kernel's IOPub as one more subscriber, and knows the last message this server heard; once the link
is mended, the kernel sends everything after it again, to every client, as it first sent it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import zmq
from zmq.eventloop.zmqstream import ZMQStream

from tf1kernel.engine.ports import LOOPBACK
from tf1kernel.guest.constants import REPLAY_REQUEST
from tf1kernel.guest.replay import DELIMITER, UNKNOWN

# A kernel whose guest cannot replay (a user's image with ipykernel 5 or 7) does not answer the request.
ANSWER_SECONDS = 5.0
SUBSCRIBED_SECONDS = 5.0
# After the link is mended, the other subscribers (each tab's) reconnect as this one does: ZeroMQ retries every
# 0.1 s. A replay this long after this one is back reaches them too.
OTHERS_RECONNECT_SECONDS = 1.0
CHANNELS = ("shell", "control", "iopub", "stdin")

log = logging.getLogger(__name__)


async def hand_over(kernel_manager: Any, kernel_id: str, logger: logging.Logger = log, after: str = "") -> int:
    """Have jupyter_server hold what the adopted kernel published while nobody listened, for the client that
    missed it; return how many messages (0: none, or the kernel cannot replay). after: the last message the dead
    server heard, where it recorded one (a remote kernel, whose link may have been cut before the server died)."""
    manager = kernel_manager.get_kernel(kernel_id)
    client = manager.client()
    client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
    try:
        sessions = (await ask(client, take=False)).get("sessions")
        if sessions is None:
            logger.warning("tf1kernel: kernel %s cannot give back what it printed while no server listened (its "
                           "ipykernel has no replay: tf1kernel's images have it); its state is kept", kernel_id)
            return 0
        if not sessions:
            return 0
        missed_by = sessions[-1]  # the client of the last cell: the notebook's tab
        channels = {name: getattr(manager, f"connect_{name}")(identity=missed_by.encode()) for name in CHANNELS}
        for name, stream in channels.items():
            stream.channel = name  # as jupyter_server's own channels carry it (its websocket protocol reads it)
        await subscribed(channels["iopub"])
        kernel_manager.start_buffering(kernel_id, f"{kernel_id}:{missed_by}", channels)
        keep_buffer_for(kernel_manager, kernel_id, f"{kernel_id}:{missed_by}", logger)
        taken = await ask(client, take=True, session=missed_by, after=after)
        count = int(taken.get("messages", 0)) + int(taken.get("replies", 0))
        logger.info("tf1kernel: kernel %s: %d message(s) it sent while no server listened wait for client %s%s",
                    kernel_id, count, missed_by, dropped_words(taken))
        return count
    finally:
        client.stop_channels()


# How long the buffer waits for the client that missed the messages while others of the kernel connect: longer than
# JupyterLab's and Notebook 7's retries (about 1-2 minutes), and a reload soon after.
KEEP_BUFFER_SECONDS = 600.0
_kept_for: dict[str, tuple[str, float]] = {}  # kernel id: (session key, until when)


def keep_buffer_for(kernel_manager: Any, kernel_id: str, session_key: str, logger: logging.Logger = log) -> None:
    """Keep the buffer for the client that missed the messages, even when another client of the kernel connects
    first. jupyter_server keeps one buffer per kernel, and discards it when a client of another session connects
    (its get_buffer): Notebook 7's page has more than one connection to a kernel, and the first one back is not
    always the notebook's, and it may close again before the notebook's is back (start_buffering for it would
    discard the buffer too). Until that client is back (or KEEP_BUFFER_SECONDS), the others get no buffer, and
    the buffer stays; then the server's own methods apply again."""
    _kept_for[kernel_id] = (session_key, time_now() + KEEP_BUFFER_SECONDS)
    get_buffer, start_buffering = (getattr(kernel_manager, name, None) for name in ("get_buffer", "start_buffering"))
    if get_buffer is None or start_buffering is None:
        logger.info("tf1kernel: this jupyter_server has no get_buffer; its buffer goes to the first client back")
        return
    if getattr(get_buffer, "keeps_for_tf1kernel", False):
        return

    def waits_for_another(kernel_id: str, session_key: str) -> bool:
        kept = _kept_for.get(kernel_id)
        if kept is None:
            return False
        if kept[1] > time_now() and kept[0] != session_key:
            return True
        _kept_for.pop(kernel_id, None)  # its client is back, or was waited for long enough
        return False

    def get_buffer_kept(kernel_id: str, session_key: str) -> Any:
        if waits_for_another(kernel_id, session_key):
            logger.info("tf1kernel: kernel %s: a client of session %s connected; the missed messages wait for %s",
                        kernel_id, session_key, _kept_for[kernel_id][0])
            return None
        return get_buffer(kernel_id, session_key)

    def start_buffering_kept(kernel_id: str, session_key: str, channels: dict[str, Any]) -> None:
        if waits_for_another(kernel_id, session_key):
            for stream in channels.values():  # as jupyter_server does when it buffers nothing
                stream.close()
            return
        start_buffering(kernel_id, session_key, channels)

    get_buffer_kept.keeps_for_tf1kernel = True  # type: ignore[attr-defined]
    kernel_manager.get_buffer, kernel_manager.start_buffering = get_buffer_kept, start_buffering_kept


def time_now() -> float:
    return asyncio.get_running_loop().time()


class LinkReplay:
    """The last IOPub message this server heard from a kernel over a link that can be cut without a word, and
    everything the kernel sent after it, sent again once the link is mended."""

    def __init__(self, manager: Any, kernel_id: str, stream: Any, logger: logging.Logger = log) -> None:
        self.manager = manager
        self.kernel_id = kernel_id
        self.log = logger
        self.last_heard = ""  # msg_id
        self.welcomes = 0  # the kernel welcomes each subscription as it takes effect: this listener's, after a mend
        self.stream = stream
        self.stream.on_recv(self.hear)
        self.replaying: asyncio.Task[int] | None = None

    @classmethod
    def listen(cls, manager: Any, kernel_id: str, iopub_port: int, logger: logging.Logger = log) -> LinkReplay:
        """Listening to the kernel's IOPub on this machine's port (the tunnel's end, which the manager learns
        only once the launch returns), on the running event loop."""
        socket = zmq.Context.instance().socket(zmq.SUB)
        socket.linger = 0
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        socket.connect(f"tcp://{LOOPBACK}:{iopub_port}")
        return cls(manager, kernel_id, ZMQStream(socket), logger)

    def hear(self, frames: list[bytes]) -> None:
        try:
            header = json.loads(bytes(frames[frames.index(DELIMITER) + 2]))
        except (ValueError, IndexError):
            return
        self.last_heard = str(header.get("msg_id", "")) or self.last_heard
        self.welcomes += header.get("msg_type") == "iopub_welcome"

    def mending(self) -> tuple[str, int]:
        """Called before the link may be mended (nothing is heard until then): the last message heard, and the
        welcomes so far."""
        return self.last_heard, self.welcomes

    def mended(self, heard: tuple[str, int]) -> None:
        """The link was mended: have the kernel send everything after what was heard again, in the background."""
        self.replaying = asyncio.ensure_future(self.send_again(*heard))

    async def send_again(self, after: str, welcomes: int) -> int:
        """Once this listener is subscribed again (a welcome more), and the others had time to be, everything the
        kernel sent after `after`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SUBSCRIBED_SECONDS
        while self.welcomes <= welcomes and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(OTHERS_RECONNECT_SECONDS)
        client = self.manager.client()
        client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
        try:
            taken = await ask(client, take=True, after=after)
        finally:
            client.stop_channels()
        if not taken:
            self.log.warning("tf1kernel: kernel %s cannot send again what it sent while its link was cut (its "
                             "ipykernel has no replay: tf1kernel's images have it)", self.kernel_id)
            return 0
        count = int(taken.get("messages", 0)) + int(taken.get("replies", 0))
        self.log.warning("tf1kernel: kernel %s sent again the %d message(s) this server missed while its link was "
                         "cut%s", self.kernel_id, count, dropped_words(taken))
        return count

    def close(self) -> None:
        if self.replaying is not None:
            self.replaying.cancel()
        self.stream.close(linger=0)


def dropped_words(taken: dict[str, Any]) -> str:
    dropped = taken.get("dropped")
    return "" if not dropped else (" (older ones were dropped)" if dropped == UNKNOWN else
                                   f" ({dropped} older ones were dropped)")


async def ask(client: Any, take: bool, session: str = "", after: str = "") -> dict[str, Any]:
    """The kernel's answer to a replay request ({} when it does not answer)."""
    request = client.session.msg(REPLAY_REQUEST, {"take": take, "session": session, "after": after})
    client.control_channel.send(request)
    deadline = asyncio.get_running_loop().time() + ANSWER_SECONDS
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            reply = await client.get_control_msg(timeout=left)
        except Exception:  # queue.Empty, in jupyter_client's words
            return {}
        if reply.get("parent_header", {}).get("msg_id") == request["header"]["msg_id"]:
            return dict(reply.get("content", {}))
    return {}


async def subscribed(iopub: Any) -> None:
    """Until the kernel's IOPub has this subscriber (its first message arrives: the kernel welcomes each one)."""
    heard = asyncio.get_running_loop().create_future()

    def hear(_: Any) -> None:
        if not heard.done():
            heard.set_result(True)

    iopub.on_recv(hear)
    try:
        await asyncio.wait_for(heard, SUBSCRIBED_SECONDS)
    except asyncio.TimeoutError:
        log.debug("tf1kernel: no IOPub message in %s s; replaying all the same", SUBSCRIBED_SECONDS)
    finally:
        iopub.stop_on_recv()
