"""The "bare Starlette" baseline: the smallest SSE fan-out a Python developer would write.

One task makes the events and puts the same encoded bytes on the bounded queue of every client
subscribed to the event's symbol; each client's StreamingResponse writes one event per write. A
client whose queue (20,000 events) overflows is dropped. A client names its symbols as
tickstream's clients do (``/sse?symbols=A,B``; default ``BENCH``). uvicorn runs with uvloop and
httptools, as the edge does. The events:

- ``PORT RATE``: RATE synthetic trades of symbol BENCH per second (``bench/payload.py``);
- ``PORT --replay``: the bundled recording (BTCUSDT and ETHUSDT) as the feed's ``--source
  replay --speed 1 --loop`` replays it (``replay_ticks.py``: same ticks, same pacing, the edge's
  event bytes), every event of a batch stamped with the batch's publish time.

Usage: python bench/baseline_app.py PORT (RATE | --replay)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from payload import tick_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

QUEUE_EVENTS = 20_000
clients: defaultdict[str, set[asyncio.Queue[bytes]]] = defaultdict(set)


def fan_out(symbol: str, frame: bytes) -> None:
    """``frame`` onto the queue of every client of ``symbol``; a full queue drops its client."""
    for queue in list(clients[symbol]):
        try:
            queue.put_nowait(frame)
        except asyncio.QueueFull:
            for members in clients.values():
                members.discard(queue)


async def produce(rate: float) -> None:
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    while True:
        due = int((loop.time() - started) * rate) - sent
        now = time.time_ns()
        for _ in range(max(due, 0)):
            sent += 1
            fan_out("BENCH", f"id: {sent}\nevent: trade\ndata: {tick_json(sent, now)}\n\n".encode())
        await asyncio.sleep(0.001)


async def replay() -> None:
    from replay_ticks import Batch, TickNumbers, announce_start, load_ticks, schedule

    ticks = await asyncio.to_thread(load_ticks)
    numbers = TickNumbers()
    for step in schedule(ticks, clock=asyncio.get_running_loop().time):
        if not isinstance(step, Batch):
            await asyncio.sleep(step)
            continue
        ingest_ns = time.time_ns()
        if numbers.offset == 0:
            announce_start(ingest_ns)
        for tick in step.ticks:
            kind, data = numbers.event(tick, step.shift_ns, ingest_ns)
            frame = f"id: {numbers.offset}\nevent: {kind}\ndata: {data}\n\n"
            fan_out(tick.symbol, frame.encode())


async def stream(request: Request) -> StreamingResponse:
    queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_EVENTS)
    symbols = request.query_params.get("symbols", "BENCH").split(",")
    for symbol in symbols:
        clients[symbol].add(queue)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b": baseline\n\n"
            while True:
                yield await queue.get()
        finally:
            for symbol in symbols:
                clients[symbol].discard(queue)

    return StreamingResponse(body(), media_type="text/event-stream")


def serve(port: int, producer: Callable[[], Coroutine[Any, Any, None]] | None) -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(producer()) if producer is not None else None
        yield
        if task is not None:
            task.cancel()

    app = Starlette(routes=[Route("/sse", stream)], lifespan=lifespan)
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("rate", type=float, nargs="?", default=0.0, help="events per second")
    parser.add_argument("--replay", action="store_true", help="replay the bundled recording")
    args = parser.parse_args()
    if args.replay:
        serve(args.port, replay)
    elif args.rate > 0:
        serve(args.port, lambda: produce(args.rate))
    else:
        serve(args.port, None)  # idle streams only (the memory scenario)


if __name__ == "__main__":
    main()
