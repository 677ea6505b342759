"""Edges stood in by gRPC subscribers: ``EDGES`` x one live Subscribe per symbol (an edge opens
one upstream per symbol its clients want), on the feed replicas of ``TARGETS`` in turn (edge i on
target i mod len), reading every tick for ``SECONDS``; prints one JSON line with the ticks read.

Usage: python bench/grpc_subscribers.py TARGETS EDGES SYMBOLS SECONDS
    (TARGETS: HOST:PORT,...; SYMBOLS: comma-separated)
"""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
from tickstream.v1 import feed_pb2, feed_pb2_grpc


async def subscribe(stub: feed_pb2_grpc.FeedServiceStub, symbol: str, counts: list[int]) -> None:
    request = feed_pb2.SubscribeRequest(symbols=[symbol])
    async for response in stub.Subscribe(request):
        counts[0] += len(response.ticks.ticks)


async def main(targets: list[str], edges: int, symbols: list[str], seconds: float) -> None:
    counts = [0]
    channels = [grpc.aio.insecure_channel(target) for target in targets]
    stubs = [feed_pb2_grpc.FeedServiceStub(channel) for channel in channels]
    tasks = [
        asyncio.create_task(subscribe(stubs[edge % len(stubs)], symbol, counts))
        for edge in range(edges)
        for symbol in symbols
    ]
    print("ready", file=sys.stderr, flush=True)
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    print(json.dumps({"edges": edges, "subscriptions": len(tasks), "ticks_read": counts[0]}))


if __name__ == "__main__":
    TARGETS, EDGES, SYMBOLS, SECONDS = sys.argv[1:5]
    asyncio.run(main(TARGETS.split(","), int(EDGES), SYMBOLS.split(","), float(SECONDS)))
