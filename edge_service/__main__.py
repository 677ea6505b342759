"""``python -m edge_service``: see ``--help``."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys

import uvicorn
import uvloop
from pydantic import ValidationError
from pythonjsonlogger.json import JsonFormatter

from .app import begin_shutdown, create_app
from .config import EdgeSettings
from .redaction import RedactSecrets

log = logging.getLogger("edge_service")


SWITCH_INTERVAL_S = 0.0005
GC_THRESHOLD = 50_000  # allocations between young-generation collections (CPython: 700)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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


class EdgeServer(uvicorn.Server):
    """uvicorn's server, telling every stream first when a signal starts its shutdown, so each
    client gets its farewell while uvicorn waits for the connections to end."""

    def handle_exit(self, sig: int, frame: object) -> None:
        loop = asyncio.get_event_loop()
        app = self.config.app
        loop.call_soon_threadsafe(begin_shutdown, app)
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


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
    server = EdgeServer(config)
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


def main(argv: list[str] | None = None) -> int:
    """Parse flags and ``EDGE_*`` variables and run the edge; 2 on a configuration error."""
    try:
        settings = EdgeSettings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    except (ValidationError, ValueError) as error:
        print(f"edge_service: invalid configuration: {error}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler()
    fields = "%(asctime)s %(levelname)s %(name)s %(message)s"
    json_lines = settings.log_format == "json"
    handler.setFormatter(JsonFormatter(fields) if json_lines else logging.Formatter(LOG_FORMAT))
    secrets = [s.get_secret_value() for s in (settings.jwt_secret, settings.feed_token) if s]
    handler.addFilter(RedactSecrets(secrets))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    try:
        uvloop.run(serve(settings))
    except ValueError as error:  # e.g. --auth jwt without exactly one key
        print(f"edge_service: invalid configuration: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"edge_service: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
