"""The "bare Starlette" baseline: the smallest SSE fan-out a Python developer would write.

One task makes RATE tick-shaped events per second (``bench/payload.py``), encodes each once and
puts the same bytes on every client's bounded queue; each client's StreamingResponse writes one
event per write. A client whose queue (20,000 events) overflows is dropped. uvicorn runs with
uvloop and httptools, as the edge does.

Usage: python bench/baseline_app.py PORT RATE
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from payload import tick_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

QUEUE_EVENTS = 20_000
clients: set[asyncio.Queue[bytes]] = set()


async def produce(rate: float) -> None:
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    while True:
        due = int((loop.time() - started) * rate) - sent
        now = time.time_ns()
        for _ in range(max(due, 0)):
            sent += 1
            frame = f"id: {sent}\nevent: trade\ndata: {tick_json(sent, now)}\n\n".encode()
            for queue in list(clients):
                try:
                    queue.put_nowait(frame)
                except asyncio.QueueFull:
                    clients.discard(queue)
        await asyncio.sleep(0.001)


async def stream(request: Request) -> StreamingResponse:
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_EVENTS)
    clients.add(queue)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b": baseline\n\n"
            while True:
                yield await queue.get()
        finally:
            clients.discard(queue)

    return StreamingResponse(body(), media_type="text/event-stream")


def main() -> None:
    port, rate = int(sys.argv[1]), float(sys.argv[2])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(produce(rate)) if rate > 0 else None
        yield
        if task is not None:
            task.cancel()

    app = Starlette(routes=[Route("/sse", stream)], lifespan=lifespan)
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )


if __name__ == "__main__":
    main()
