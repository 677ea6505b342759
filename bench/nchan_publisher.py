"""Publishes RATE tick-shaped messages per second to an Nchan publisher location.

One keep-alive HTTP/1.1 connection, one request at a time (Nchan does not serve pipelined
publisher requests promptly); when behind schedule it publishes back to back. A plain
synchronous script: it runs in a process of its own, pinned with the server it feeds.

Usage: python bench/nchan_publisher.py PORT RATE
"""

from __future__ import annotations

import socket
import sys
import time

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


def main() -> None:
    port, rate = int(sys.argv[1]), float(sys.argv[2])
    sock = connect(port)
    head = "POST /pub HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    started, sent, pending = time.monotonic(), 0, b""
    while True:
        due = int((time.monotonic() - started) * rate) - sent
        if due <= 0:
            time.sleep(min(0.001, 1 / rate))
            continue
        for _ in range(due):
            sent += 1
            body = tick_json(sent, time.time_ns()).encode()
            request = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
            try:
                sock.sendall(request)
                pending = read_response(sock, pending)
            except ConnectionError:  # nginx ends a keep-alive connection now and then
                sock.close()
                sock, pending = connect(port), b""


if __name__ == "__main__":
    main()
