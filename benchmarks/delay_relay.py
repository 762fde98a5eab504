"""A TCP relay that holds every byte for a while in each direction: a slow link, where `tc netem` is missing.

This machine's kernel has no netem qdisc ("Specified qdisc kind is unknown"), so the slow link of
remote_link.py is this relay in front of the remote host's sshd: each chunk is passed on `one-way` ms after it
arrived, in order, so a round trip takes 2 x one-way ms longer. Latency only: bandwidth is not limited.

    python benchmarks/delay_relay.py LISTEN_PORT TARGET_HOST TARGET_PORT ONE_WAY_MS
"""

from __future__ import annotations

import asyncio
import sys
import time


async def carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, data))
        queue.put_nowait((time.monotonic() + delay, b""))

    async def write() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(listen_port: int, host: str, port: int, one_way_ms: float) -> None:
    delay = one_way_ms / 1000

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(carry(client_reader, server_writer, delay), carry(server_reader, client_writer, delay))

    server = await asyncio.start_server(relay, "127.0.0.1", listen_port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
