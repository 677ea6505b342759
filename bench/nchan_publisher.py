"""Publishes tick-shaped messages to Nchan's publisher locations.

- ``PORT RATE``: RATE synthetic trades of symbol BENCH per second to ``/pub`` (channel
  ``bench``), stamped ``ingestTime`` one by one;
- ``PORT --replay``: the bundled recording (BTCUSDT and ETHUSDT) as the feed's ``--source
  replay --speed 1 --loop`` replays it (``replay_ticks.py``): each tick to ``/pub/<symbol>``
  (one channel per symbol) with its event name in ``X-EventSource-Event``, each stamped
  ``ingestTime`` just before its request (the moment the feed's hub would accept it: a batch's
  later ticks wait for the earlier ones' requests, and are not charged for that wait).

One keep-alive HTTP/1.1 connection, one request at a time (Nchan does not serve pipelined
publisher requests promptly); when behind schedule it publishes back to back. A plain
synchronous script: it runs in a process of its own, pinned with the server it feeds.

Usage: python bench/nchan_publisher.py PORT (RATE | --replay)
"""

from __future__ import annotations

import argparse
import socket
import time
from dataclasses import dataclass

from payload import tick_json


def read_response(sock: socket.socket, pending: bytes) -> bytes:
    """Read one HTTP response (headers and Content-Length body); return the bytes after it."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("nginx closed the publisher connection")
        pending += chunk
    head, _, rest = pending.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(rest) < length:
        rest += sock.recv(65536)
    return rest[length:]


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class Publisher:
    """One keep-alive connection to nginx; :meth:`post` publishes one message."""

    port: int
    sock: socket.socket | None = None
    pending: bytes = b""

    def post(self, path: str, body: bytes, event: str | None = None) -> None:
        head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        if event is not None:
            head += f"X-EventSource-Event: {event}\r\n"
        request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        try:
            if self.sock is None:
                self.sock, self.pending = connect(self.port), b""
            self.sock.sendall(request)
            self.pending = read_response(self.sock, self.pending)
        except ConnectionError:  # nginx ends a keep-alive connection now and then
            if self.sock is not None:
                self.sock.close()
            self.sock = None


def publish_synthetic(publisher: Publisher, rate: float) -> None:
    started, sent = time.monotonic(), 0
    while True:
        due = int((time.monotonic() - started) * rate) - sent
        if due <= 0:
            time.sleep(min(0.001, 1 / rate))
            continue
        for _ in range(due):
            sent += 1
            publisher.post("/pub", tick_json(sent, time.time_ns()).encode())


def publish_replay(publisher: Publisher) -> None:
    from replay_ticks import Batch, TickNumbers, announce_start, load_ticks, schedule

    numbers = TickNumbers()
    for step in schedule(load_ticks()):
        if not isinstance(step, Batch):
            time.sleep(step)
            continue
        if numbers.offset == 0:
            announce_start(time.time_ns())
        for tick in step.ticks:  # stamped as it is handed to Nchan, as the hub stamps on accept
            kind, body = numbers.event(tick, step.shift_ns, time.time_ns())
            publisher.post(f"/pub/{tick.symbol}", body.encode(), event=kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("rate", type=float, nargs="?", help="synthetic events per second")
    parser.add_argument("--replay", action="store_true", help="replay the bundled recording")
    args = parser.parse_args()
    publisher = Publisher(args.port)
    if args.replay:
        publish_replay(publisher)
    elif args.rate:
        publish_synthetic(publisher, args.rate)
    else:
        parser.error("give RATE or --replay")


if __name__ == "__main__":
    main()
