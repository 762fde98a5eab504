"""An adopted kernel's missed output, handed to the client that missed it (the server's side of guest/replay.py).

jupyter_server keeps what a kernel sends while a client's websocket is closed, for that client, and hands it over
when the client reconnects with the same session id: a reload or a lost connection does not lose output. A server
that died took that buffer with it. So, once a server has adopted a kernel, it asks the kernel which client
missed messages, opens that client's channels (a shell socket with the client's identity, as jupyter_server opens
them), starts jupyter_server's own buffering for it (MappingKernelManager.start_buffering, its public method),
and asks the kernel to send the messages again. The still-open tab reconnects within seconds (JupyterLab and
Notebook 7 retry for a minute or two) and jupyter_server replays them to it, with their original parent headers:
the cell shows its whole output, its execution count and its end.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tf1kernel.guest.constants import REPLAY_REQUEST

# A kernel whose guest cannot replay (a user's image with ipykernel 5 or 7) does not answer the request.
ANSWER_SECONDS = 5.0
SUBSCRIBED_SECONDS = 5.0
CHANNELS = ("shell", "control", "iopub", "stdin")

log = logging.getLogger(__name__)


async def hand_over(kernel_manager: Any, kernel_id: str, logger: logging.Logger = log) -> int:
    """Have jupyter_server hold what the adopted kernel published while nobody listened, for the client that
    missed it; return how many messages (0: none, or the kernel cannot replay)."""
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
        taken = await ask(client, take=True, session=missed_by)
        count = int(taken.get("messages", 0)) + int(taken.get("replies", 0))
        logger.info("tf1kernel: kernel %s: %d message(s) it sent while no server listened wait for client %s%s",
                    kernel_id, count, missed_by,
                    f" ({taken['dropped']} older ones were dropped)" if taken.get("dropped") else "")
        return count
    finally:
        client.stop_channels()


async def ask(client: Any, take: bool, session: str = "") -> dict[str, Any]:
    """The kernel's answer to a replay request ({} when it does not answer)."""
    request = client.session.msg(REPLAY_REQUEST, {"take": take, "session": session})
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
