"""Tick-shaped SSE payloads for the Nchan and Starlette baselines, the same size and shape as
tickstream's own events (the proto3 JSON mapping of ``tickstream.v1.Tick``), so every server in a
run moves comparable bytes and the load client reads latency from the same ``ingestTime``."""

from __future__ import annotations

import json
import time

_prefix_cache: tuple[int, str] = (-1, "")


def rfc3339_ns(ns: int) -> str:
    """ns since the epoch -> ``2026-11-30T02:11:44.885691460Z`` (UTC, 9 fraction digits)."""
    global _prefix_cache
    seconds, frac = divmod(ns, 1_000_000_000)
    if _prefix_cache[0] != seconds:
        _prefix_cache = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_prefix_cache[1]}.{frac:09d}Z"


def timestamp_json(ns: int) -> str:
    """ns since the epoch as the proto3 JSON mapping of a Timestamp, in quotes, with the fewest
    of 0, 3, 6 or 9 fraction digits that are exact (as the edge writes event and ingest times)."""
    nanos = ns % 1_000_000_000
    if nanos == 0:
        fraction = ""
    elif nanos % 1_000_000 == 0:
        fraction = f".{nanos // 1_000_000:03d}"
    elif nanos % 1_000 == 0:
        fraction = f".{nanos // 1_000:06d}"
    else:
        fraction = f".{nanos:09d}"
    return f'"{rfc3339_ns(ns)[:19]}{fraction}Z"'


def tick_json(sequence: int, now_ns: int) -> str:
    """One trade of symbol BENCH as compact JSON, stamped ``ingestTime`` = ``now_ns``."""
    stamp = rfc3339_ns(now_ns)
    return json.dumps(
        {
            "symbol": "BENCH",
            "sequence": str(sequence),
            "offset": str(sequence),
            "eventTime": stamp,
            "ingestTime": stamp,
            "trade": {
                "price": f"{61000 + sequence % 1000}.25",
                "size": "3",
                "tradeId": str(sequence),
                "side": "SIDE_BUY",
            },
        },
        separators=(",", ":"),
    )
