"""The chaos run's producer: publishes numbered trades of one symbol through ``Publish``, one
batch in flight, failing over between feed replicas, and records every acknowledgement.

    python -m chaos.producer --feeds 127.0.0.1:P1,127.0.0.1:P2 --symbol CHAOS --out producer.jsonl

Trade ``n`` has trade id and dedup id ``p<n>``. Each acknowledged batch is appended to ``--out``
(``{"first", "last", "epoch", "last_offset", "accepted", "duplicates"}``) and flushed before the
next is sent. Started again after a SIGKILL, it goes on after the last acknowledged trade, so
the batch that was in flight is sent again: stored or not, the feed's dedup window must make it
appear once. Runs until killed or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
from pathlib import Path

import grpc
from tickstream.v1 import ingest_pb2, ingest_pb2_grpc, tick_pb2


def journal(path: Path) -> list[dict[str, int]]:
    """The acknowledgements recorded in ``path`` (none when it is missing); a line cut short by
    a kill is left out."""
    records = []
    if path.exists():
        for line in path.read_text("utf-8").splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def last_acknowledged(path: Path) -> int:
    """The highest trade number acknowledged in ``path``; -1 when none is."""
    return max((int(record["last"]) for record in journal(path)), default=-1)


def acknowledged_offset(path: Path) -> int:
    """The highest feed offset acknowledged in ``path``: every acknowledged trade is at or
    below it; 0 when none is."""
    return max((int(record["last_offset"]) for record in journal(path)), default=0)


def batch(symbol: str, first: int, size: int) -> ingest_pb2.PublishRequest:
    """Trades ``first`` .. ``first + size - 1`` of ``symbol``."""
    drafts = [
        ingest_pb2.TickDraft(
            symbol=symbol,
            trade=tick_pb2.Trade(price=f"100.{n % 1000:03d}", size="1", trade_id=f"p{n}"),
            dedup_id=f"p{n}",
        )
        for n in range(first, first + size)
    ]
    return ingest_pb2.PublishRequest(ticks=drafts, batch_id=first)


async def publish(feed: str, args: argparse.Namespace, out: Path) -> None:
    """Publish to ``feed`` until its call fails (then the caller moves on)."""
    async with grpc.aio.insecure_channel(feed) as channel:
        call = ingest_pb2_grpc.IngestServiceStub(channel).Publish()
        first = last_acknowledged(out) + 1
        while True:
            await call.write(batch(args.symbol, first, args.batch))
            reply = await asyncio.wait_for(call.read(), 10)
            if reply is grpc.aio.EOF:
                return
            record = {
                "first": first,
                "last": first + args.batch - 1,
                "epoch": reply.epoch,
                "last_offset": reply.last_offset,
                "accepted": reply.accepted,
                "duplicates": reply.duplicates,
            }
            with out.open("a", encoding="utf-8") as file:
                file.write(json.dumps(record) + "\n")
            first += args.batch
            await asyncio.sleep(args.interval)


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    out = Path(args.out)
    for feed in itertools.cycle(args.feeds.split(",")):
        task = asyncio.ensure_future(publish(feed, args, out))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            task.cancel()
            return
        stopping.cancel()
        with contextlib.suppress(grpc.RpcError, TimeoutError, OSError):
            await task
        await asyncio.sleep(0.3)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--feeds", required=True, help="host:port[,host:port...]")
    parser.add_argument("--symbol", default="CHAOS")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between batches")
    asyncio.run(main(parser.parse_args()))
