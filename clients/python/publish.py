"""Publish ticks from a CSV or JSON-lines file to a tickstream feed, each stored exactly once.

    python clients/python/publish.py ticks.csv --target 127.0.0.1:50051 [--rate 500]

One tick per CSV row (with a header) or JSON line (flat, or in the SSE shape): ``symbol``,
``type`` (trade or quote; without it, a row with ``bid_price`` is a quote),
``price``, ``size``, ``side`` (buy or sell), ``trade_id`` for trades; ``bid_price``,
``bid_size``, ``ask_price``, ``ask_size`` for quotes; ``event_time`` (RFC 3339) and ``id``
optional. Each tick's dedup id is its ``id``, else ``<file name>:<line>``: stable for the same
input, so running again after a crash stores nothing twice. Prints each acknowledgement and
exits 0 once every tick is acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tickstream_client as ts


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` for each tick in a ``.csv`` file, or a JSON-lines file."""
    with path.open(newline="") as lines:
        if path.suffix == ".csv":
            reader = csv.DictReader(lines)
            for row in reader:
                yield reader.line_num, row
        else:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield number, json.loads(line)


def to_draft(path: Path, line: int, row: dict[str, Any]) -> Any:
    """The row as a tick draft, its dedup id taken from the input. A JSON line in the SSE
    shape (``{"symbol", "eventTime", "trade": {...}}``) is read as such; a row without a
    ``type`` is a quote when it has a ``bid_price``."""
    dedup_id = str(row.get("id") or f"{path.name}:{line}")
    if isinstance(row.get("trade") or row.get("quote"), dict):
        shaped = {key: value for key, value in row.items() if key != "id"}
        return ts.draft_from({"dedupId": dedup_id, **shaped})
    common = {"event_time": row.get("event_time") or None, "dedup_id": dedup_id}
    if (row.get("type") or ("quote" if row.get("bid_price") else "trade")) == "quote":
        prices = [str(row[key]) for key in ("bid_price", "bid_size", "ask_price", "ask_size")]
        return ts.quote(row["symbol"], *prices, **common)
    return ts.trade(
        row["symbol"],
        str(row["price"]),
        str(row["size"]),
        trade_id=str(row.get("trade_id") or ""),
        side=row.get("side") or None,
        **common,
    )


def print_ack(ack: ts.Ack) -> None:
    print(
        f"ack batch {ack.batch_id}: {ack.accepted} stored, {ack.duplicates} duplicates, "
        f"through offset {ack.last_offset} (epoch {ack.epoch})",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    path, started, count = Path(args.file), time.monotonic(), 0
    publisher = ts.Publisher(
        args.target, token=args.token, producer=args.producer, on_ack=print_ack
    )
    async with publisher:
        for line, row in read_rows(path):
            await publisher.publish(to_draft(path, line, row))
            count += 1
            if args.rate and (ahead := started + count / args.rate - time.monotonic()) > 0:
                await asyncio.sleep(ahead)  # pace the input at --rate ticks per second
    stats = publisher.stats
    print(
        f"done: {count} ticks, {stats.accepted} stored, {stats.duplicates} duplicates", flush=True
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", help="a .csv file with a header, or JSON lines")
    parser.add_argument("--target", default="127.0.0.1:50051", help="the feed, host:port")
    parser.add_argument("--token", help="bearer token, when the feed checks tokens")
    parser.add_argument("--producer", default="publish.py", help="name shown in ListSources")
    parser.add_argument("--rate", type=float, default=0, help="ticks per second (0: no pacing)")
    try:
        asyncio.run(main(parser.parse_args()))
    except (ts.TickstreamError, ValueError, KeyError) as error:  # one line, not a traceback
        raise SystemExit(f"publish.py: {type(error).__name__}: {error}") from None
