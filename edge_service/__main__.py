"""``python -m edge_service``: see ``--help``."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys

import uvicorn

from tickstream_common.startup import run_on_uvloop, run_service

from .app import create_app
from .config import EdgeSettings

log = logging.getLogger("edge_service")


SWITCH_INTERVAL_S = 0.0005
GC_THRESHOLD = 50_000  # allocations between young-generation collections (CPython: 700)


def bind_socket(settings: EdgeSettings) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (0 = a free port). Raises OSError.

    Accepted connections inherit its options (Linux): a bounded kernel send buffer
    (``--socket-send-buffer``), so a client that stops reading backs up into the edge's own
    bounded queue quickly; and TCP_USER_TIMEOUT = ``--send-timeout``, so a client that vanished
    without a FIN (its data never acknowledged) is dropped by the kernel.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.socket_send_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.socket_send_buffer)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        timeout_ms = int(settings.send_timeout * 1000)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
    sock.bind((settings.host, settings.port))
    return sock


async def serve(settings: EdgeSettings) -> None:
    """Run uvicorn (httptools) on the edge app until SIGTERM or SIGINT."""
    sock = bind_socket(settings)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        http="httptools",
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,  # uvicorn's own lines go through our handler and format
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn offers no startup event to await; poll its flag briefly.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if server.started:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        log.info("edge_service listening on http://%s:%d", host, port)
        # Everything allocated at start-up lives as long as the process: move it out of the
        # cyclic collector's sight, and collect young objects less often (per-stream objects
        # are freed by reference counting), so full collections do not stall every stream.
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
        # The upstream reader threads need the GIL for a moment per message: hand it over
        # within 0.5 ms of a request instead of 5 ms, which a busy event loop would hold it for.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    await task


def _secrets(settings: EdgeSettings) -> list[str]:
    """The configured secrets, masked in every log line."""
    return [s.get_secret_value() for s in (settings.jwt_secret, settings.feed_token) if s]


def main(argv: list[str] | None = None) -> int:
    """Parse flags and ``EDGE_*`` variables and run the edge; 2 on a configuration error, 1 on
    an OS error (see :mod:`tickstream_common.startup`)."""
    return run_service(
        "edge_service", EdgeSettings, argv, lambda s: run_on_uvloop(serve(s)), _secrets
    )


if __name__ == "__main__":
    sys.exit(main())
