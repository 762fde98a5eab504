"""What keeping the kernel's output for a detached kernel costs (guest/replay.py): the Recorder hears every IOPub
message the kernel sends, always, to give back what a dying server or a cut link missed.

Per message, from the IOPub thread's side: signed stream messages of a cell's output (1 line, and 1 KB) sent on a
PUB socket as ipykernel sends them, a subscriber draining them; through the bare socket (the baseline) and through
the RecordingSocket that the guest puts in its place, in interleaved batches. The cost is the ratio, and the
microseconds it adds per message.

    .venv/bin/python benchmarks/recorder_cost.py [--messages 20000] [--json FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import zmq
from jupyter_client.session import Session

from tf1kernel.guest.replay import Recorder, RecordingSocket

BATCH = 500


def messages(session: Session, text: str, count: int) -> list[list[bytes]]:
    """Signed IOPub stream messages, serialized as ipykernel's Session.send would send them."""
    parent = session.msg("execute_request", {"code": "train()"})
    return [session.serialize(session.msg("stream", {"name": "stdout", "text": f"{text} {index}\n"}, parent=parent),
                              ident=[b"stream.stdout"]) for index in range(count)]


def drain(subscriber: zmq.Socket, expected: int, done: threading.Event) -> None:
    received = 0
    while received < expected:
        subscriber.recv_multipart()
        received += 1
    done.set()


def timed_batches(sockets: dict[str, object], batch_messages: list[list[bytes]], rounds: int,
                  subscriber: zmq.Socket) -> dict[str, list[float]]:
    """Seconds per message, batch by batch, the targets taking turns (so that the machine's phases hit both)."""
    seconds: dict[str, list[float]] = {name: [] for name in sockets}
    for _ in range(rounds):
        for name, socket in sockets.items():
            done = threading.Event()
            reader = threading.Thread(target=drain, args=(subscriber, len(batch_messages), done))
            reader.start()
            started = time.perf_counter()
            for frames in batch_messages:
                socket.send_multipart(frames)  # type: ignore[attr-defined]
            done.wait(60)
            seconds[name].append((time.perf_counter() - started) / len(batch_messages))
            reader.join()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000, help="messages per target and size")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="2000 messages (CI)")
    args = parser.parse_args()
    count = 2000 if args.quick else args.messages
    context = zmq.Context()
    publisher, subscriber = context.socket(zmq.PUB), context.socket(zmq.SUB)
    publisher.setsockopt(zmq.SNDHWM, 0)
    subscriber.setsockopt(zmq.RCVHWM, 0)
    port = publisher.bind_to_random_port("tcp://127.0.0.1")
    subscriber.connect(f"tcp://127.0.0.1:{port}")
    subscriber.setsockopt(zmq.SUBSCRIBE, b"")
    time.sleep(0.3)  # the subscription reaches the publisher
    session = Session(key=b"a-kernel-key")
    rows = []
    try:
        for label, text in (("a line", "step"), ("1 KB", "x" * 1024)):
            batch = messages(session, text, BATCH)
            sockets = {"bare socket": publisher, "recording socket": RecordingSocket(publisher, Recorder())}
            per_message = timed_batches(sockets, batch, max(1, count // BATCH), subscriber)
            bare = statistics.median(per_message["bare socket"])
            recorded = statistics.median(per_message["recording socket"])
            rows.append({"message": label, "bare_us": round(bare * 1e6, 2), "recording_us": round(recorded * 1e6, 2),
                         "added_us": round((recorded - bare) * 1e6, 2), "ratio": round(recorded / bare, 3)})
    finally:
        publisher.close(0)
        subscriber.close(0)
        context.term()
    print("| message | bare socket | recording socket | added | ratio |\n| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['message']} | {row['bare_us']} µs | {row['recording_us']} µs | {row['added_us']} µs | "
              f"{row['ratio']} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"targets": {row["message"]: row for row in rows}}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
