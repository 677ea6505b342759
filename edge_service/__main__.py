"""``python -m edge_service``: see ``--help``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import uvicorn

from tickstream_common.logs import configure_logging
from tickstream_common.startup import exit_code, run_on_uvloop, run_service

from .app import EdgeApp, begin_shutdown, create_app
from .config import EdgeSettings
from .head_guard import HEAD_SLACK, GuardedHttpTools, guarded_protocol, refuse_over_rate
from .limits import client_key
from .workers import WorkerPool, stop_with_parent

log = logging.getLogger("edge_service")


SWITCH_INTERVAL_S = 0.0005
# Allocations between young-generation collections (CPython: 700), and young collections between
# middle-generation ones (CPython: 10). A stream's objects live as long as it does, so the
# collector walks each of them on its way to the old generation whatever the thresholds; fewer,
# larger collections cut the rest: 10,000 streams set up in 0.25 ms of CPU each instead of
# 0.30 ms with (50,000, 10) (bench/run.py --only memory, 2026-12-03).
GC_THRESHOLDS = (200_000, 100)


def bind_socket(settings: EdgeSettings) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (0 = a free port). Raises OSError.

    With ``--workers`` above 1 it has SO_REUSEPORT, so every worker can bind the same port.
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
    if settings.workers > 1:  # every worker binds this port; the kernel spreads connections
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as error:  # the one line said at exit names the address
        sock.close()
        where = f"{settings.host}:{settings.port}"
        raise OSError(error.errno, f"cannot listen on {where}: {error.strerror}") from None
    return sock


class EdgeServer(uvicorn.Server):
    """uvicorn's server, telling every stream first when a signal starts its shutdown, so each
    client gets its farewell while uvicorn waits for the connections to end."""

    def handle_exit(self, sig: int, frame: object) -> None:
        loop = asyncio.get_event_loop()
        app = self.config.app
        loop.call_soon_threadsafe(begin_shutdown, app)
        super().handle_exit(sig, frame)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's signal capture, without its re-raise of the signal once shut down: a drain
        after SIGTERM or SIGINT is the planned end, so the process exits 0, not by the signal."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def head_limit(settings: EdgeSettings) -> int:
    """Bytes a request head may reach as it arrives (0: no cap): the target and header bounds
    and some slack; the finer 414/431 answers come from RequestSizeLimit once it is parsed."""
    if not (settings.max_header_bytes and settings.max_request_target):
        return 0
    return settings.max_request_target + settings.max_header_bytes + HEAD_SLACK


def guard_connects(
    protocol: type[GuardedHttpTools], app: EdgeApp, settings: EdgeSettings, allow: list[str] | str
) -> None:
    """Once the app's limits exist (its lifespan ran): refuse connections of addresses over
    their connect rate before parsing them (see ``head_guard``)."""
    if not settings.connect_rate:
        return
    limits = app.state.edge.registry.limits
    prefix = settings.ipv6_prefix
    allowed = allow if isinstance(allow, str) else ",".join(allow)
    refuse_over_rate(protocol, lambda host: limits.over_rate(client_key(host, prefix)), allowed)


def log_listening(host: str, port: int) -> None:
    """Log the start-up line ``edge_service listening on http://HOST:PORT`` (IPv6 bracketed)."""
    shown = f"[{host}]" if ":" in host else host
    log.info("edge_service listening on http://%s:%d", shown, port)


async def serve(
    settings: EdgeSettings, on_started: Callable[[str, int], None] = log_listening
) -> None:
    """Run uvicorn (httptools) on the edge app until SIGTERM or SIGINT; ``on_started(host,
    port)`` once it serves (by default the start-up line). Every response carries
    ``X-Edge-Worker: <pid>``, so a client can tell which of ``--workers`` answered."""
    sock = bind_socket(settings)
    port = sock.getsockname()[1]
    app = create_app(settings)
    protocol = guarded_protocol(head_limit(settings), settings.header_timeout)
    config = uvicorn.Config(
        app,
        http=protocol,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,  # uvicorn's own lines go through our handler and format
        timeout_graceful_shutdown=10,
        lifespan="on",
        headers=[("X-Edge-Worker", str(os.getpid()))],
        server_header=False,  # no "server: uvicorn": nothing to tell a scanner, one header less
    )
    server = EdgeServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # uvicorn offers no startup event to await; poll its flag briefly.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if server.started:
        guard_connects(protocol, app, settings, config.forwarded_allow_ips)
        on_started(settings.host, port)
        # Everything allocated at start-up lives as long as the process: move it out of the
        # cyclic collector's sight, and collect young objects less often (per-stream objects
        # are freed by reference counting), so full collections do not stall every stream.
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS, gc.get_threshold()[2])
        # The upstream reader threads need the GIL for a moment per message: hand it over
        # within 0.5 ms of a request instead of 5 ms, which a busy event loop would hold it for.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
    await task


def _secrets(settings: EdgeSettings) -> list[str]:
    """The configured secrets, masked in every log line."""
    return [s.get_secret_value() for s in (settings.jwt_secret, settings.feed_token) if s]


def _log_with_pids(settings: EdgeSettings) -> None:
    """Log lines name their process: several edge processes share one output."""
    configure_logging(settings.log_level, settings.log_format, _secrets(settings), with_pid=True)


def run_worker(ready: Connection, settings: EdgeSettings) -> None:
    """The body of one ``--workers`` process (spawned by :class:`WorkerPool`): logging, then
    :func:`serve` on ``settings.port`` until SIGTERM (or the parent's end); sends its pid over
    ``ready`` once it serves. Exits with the codes of :func:`main`."""
    _log_with_pids(settings)
    stop_with_parent()

    def started(_host: str, _port: int) -> None:
        ready.send(os.getpid())

    sys.exit(exit_code("edge_service", lambda: run_on_uvloop(serve(settings, started))))


def _run(settings: EdgeSettings) -> int:
    if settings.workers == 1:
        return run_on_uvloop(serve(settings))
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ValueError("--workers above 1 needs SO_REUSEPORT, which this system lacks")
    _log_with_pids(settings)
    # Bound here and never listening: port 0 becomes a number, which the port keeps while
    # workers come and go (a listening socket would take a share of the connections).
    with bind_socket(settings) as reserved:
        port = reserved.getsockname()[1]
        pool = WorkerPool(
            settings.workers,
            "edge_service.__main__:run_worker",
            (settings.model_copy(update={"port": port}),),
            on_ready=lambda: log_listening(settings.host, port),
        )
        return pool.run()


def main(argv: list[str] | None = None) -> int:
    """Parse flags and ``EDGE_*`` variables and run the edge (``--workers`` processes); 2 on a
    configuration error, 1 on an OS error (see :mod:`tickstream_common.startup`)."""
    return run_service("edge_service", EdgeSettings, argv, _run, _secrets)


if __name__ == "__main__":
    sys.exit(main())
