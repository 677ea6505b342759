"""A TCP forwarder on loopback that a test can use to drop live connections on purpose.

It stands between a client and a server (``CuttingProxy(target_port)``), forwarding bytes both
ways from a thread of its own; ``cut()`` closes every connection it carries at once, as a
dropped network path would (the client sees the connection reset), and new connections are
accepted again straight away.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator


class CuttingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``; use as a context manager."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._marker: bytes | None = None  # see cut_after
        self._dropping = False
        self.triggered = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cutting-proxy", daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        """Cut everything and let the forwarding tasks finish before the loop stops."""
        await self._cut()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cut(self) -> int:
        """Reset every carried connection now; returns how many were cut."""
        done = asyncio.run_coroutine_threadsafe(self._cut(), self._loop)
        self.cuts += 1
        return done.result(10)

    def cut_after(self, marker: bytes, delay: float = 0.3) -> None:
        """Once a client sends bytes holding ``marker``: pass them on, drop every answer from
        then on, and ``delay`` s later reset every connection: a path lost just after a request
        went out, so the server acts on it and its answer never arrives."""
        self._marker, self._delay = marker, delay

    async def _client_chunk(self, chunk: bytes) -> None:
        if self._marker is not None and self._marker in chunk:
            self._marker, self._dropping = None, True
            self.triggered.set()
            self._loop.call_later(self._delay, lambda: asyncio.ensure_future(self._end_drop()))

    async def _end_drop(self) -> None:
        await self._cut()
        self.cuts += 1
        self._dropping = False

    async def _cut(self) -> int:
        writers, self._writers = self._writers, set()
        for writer in writers:
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close with a reset, as a broken path does
                with contextlib.suppress(OSError):
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
            writer.transport.abort()
        return len(writers) // 2

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            _pipe(reader, up_writer, after=self._client_chunk),
            _pipe(up_reader, writer, drop=lambda: self._dropping),
            return_exceptions=True,
        )
        for each in (writer, up_writer):
            self._writers.discard(each)
            each.transport.abort()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    after: Callable[[bytes], Awaitable[None]] | None = None,
    drop: Callable[[], bool] | None = None,
) -> None:
    """Forward ``reader`` to ``writer``; ``after(chunk)`` once each chunk is passed on; while
    ``drop()`` is true, chunks are dropped instead."""
    try:
        while chunk := await reader.read(65_536):
            if drop is not None and drop():
                continue
            writer.write(chunk)
            await writer.drain()
            if after is not None:
                await after(chunk)
    finally:
        writer.transport.abort()


@contextlib.contextmanager
def cutting_proxy(target_port: int) -> Iterator[CuttingProxy]:
    with CuttingProxy(target_port) as proxy:
        yield proxy
