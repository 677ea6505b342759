"""Run inside a fresh network namespace (``unshare -n``, as root): IPv6 clients count against
the edge's per-address stream limit by their /64, not address by address. Exits 0 on success,
prints what it saw.

Inside the namespace only its own loopback exists; it gets three addresses of one /64 and one
of another, so a single machine can play one IPv6 subscriber with many addresses (as any host
given a /64 can) and a second, unrelated subscriber.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import spawn, start_feed, wait_http_ok

ONE_SUBSCRIBER = ("2001:db8:1:2::10", "2001:db8:1:2::11", "2001:db8:1:2::12")
ANOTHER = "2001:db8:1:3::10"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def open_stream(port: int, source: str) -> tuple[socket.socket, str]:
    """A stream request to the edge on [::1]:``port`` from ``source``; (the socket, left open,
    and the response's status code)."""
    sock = socket.create_connection(("::1", port), timeout=10, source_address=(source, 0))
    sock.sendall(b"GET /sse/AAA HTTP/1.1\r\nHost: edge\r\n\r\n")
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"{source}: the edge closed before a status line"
        head += chunk
    return sock, head.split(b" ", 2)[1].decode()


def main() -> int:
    ip("link", "set", "lo", "up")
    for address in (*ONE_SUBSCRIBER, ANOTHER):
        ip("-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad")
    feed = start_feed("--symbols", "AAA", "--rate", "50")
    edge_args = ["--host", "::", "--port", "0", "--feed-target", f"127.0.0.1:{feed.port}"]
    edge = spawn("edge", "edge_service", [*edge_args, "--max-streams-per-client", "2"])
    held: list[socket.socket] = []
    try:
        port = int(edge.wait_for_line(r"listening on http://\[::\]:(\d+)")[1])
        wait_http_ok(f"http://[::1]:{port}/readyz", edge)
        statuses = {}
        for source in (*ONE_SUBSCRIBER, ANOTHER):
            sock, statuses[source] = open_stream(port, source)
            held.append(sock)
        print("status by source address:", statuses)
        expected = dict(zip(ONE_SUBSCRIBER, ("200", "200", "429"), strict=True))
        assert statuses == {**expected, ANOTHER: "200"}, statuses
        print("one /64 held to 2 streams; another /64 has its own budget")
        return 0
    finally:
        for sock in held:
            sock.close()
        edge.kill()
        feed.kill()


if __name__ == "__main__":
    sys.exit(main())
