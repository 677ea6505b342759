"""Per-tick cost of the edge's encoding (protobuf ``Tick`` -> SSE frame bytes), old and new.

Publishes the bundled recording (both files, trades and quotes, in batches of 100) through the
feed's :class:`TickHub`, so the ticks are what the edge receives, then times
``encode_tick_reference`` (json_format + json + sse-starlette) and ``encode_tick`` (the fast
path) on the same ticks and checks they give the same bytes.

    .venv/bin/python bench/encode_ticks.py [--ticks 20000] [--repeat 5]

Prints microseconds per tick (see :func:`us_per_tick` for how a busy machine is allowed for).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from tickstream.v1 import tick_pb2

from edge_service.encoding import EncodedTick, encode_tick, encode_tick_reference
from feed_service.hub import TickHub
from feed_service.sources.replay import load_recording

RECORDING = Path(__file__).resolve().parent.parent / "data" / "binance" / "spot"
EPOCH = "2a4df7dd760a4637"
BATCH = 100
CHUNK = 1_000
Encoder = Callable[[tick_pb2.Tick, str], EncodedTick]


def recorded_ticks(count: int) -> list[tick_pb2.Tick]:
    """The first ``count`` ticks of the recording as the hub numbers and stamps them."""
    recorded, infos = load_recording([RECORDING])
    recorded = recorded[:count]
    hub = TickHub(max(1, len(recorded)))
    hub.add_symbols(infos)
    for start in range(0, len(recorded), BATCH):
        hub.publish([r.draft() for r in recorded[start : start + BATCH]])
    return [stored.tick for stored in hub.history.after(0, len(recorded))]


def us_per_tick(
    encoders: dict[str, Encoder], ticks: list[tick_pb2.Tick], repeat: int
) -> dict[str, float]:
    """Microseconds per tick of each encoder: the ticks are timed in chunks of ``CHUNK``, each
    encoder in turn, ``repeat`` times; a chunk counts with its best time (the least disturbed
    by other work on the machine) and the figure is the sum over chunks divided by the ticks."""
    chunks = [ticks[start : start + CHUNK] for start in range(0, len(ticks), CHUNK)]
    best = {name: [float("inf")] * len(chunks) for name in encoders}
    clock = time.perf_counter
    for _ in range(repeat):
        for name, encode in encoders.items():
            for index, chunk in enumerate(chunks):
                started = clock()
                for tick in chunk:
                    encode(tick, EPOCH)
                best[name][index] = min(best[name][index], clock() - started)
    return {name: sum(times) / len(ticks) * 1e6 for name, times in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    ticks = recorded_ticks(args.ticks)
    trades = sum(tick.HasField("trade") for tick in ticks)
    same = all(encode_tick(t, EPOCH) == encode_tick_reference(t, EPOCH) for t in ticks)
    figures = us_per_tick({"old": encode_tick_reference, "new": encode_tick}, ticks, args.repeat)
    old, new = figures["old"], figures["new"]
    print(f"{len(ticks)} ticks ({trades} trades, {len(ticks) - trades} quotes), same bytes: {same}")
    print(f"old (json_format + json + sse-starlette): {old:7.2f} us/tick")
    print(f"new (encode_tick):                         {new:7.2f} us/tick  ({old / new:.1f}x)")


if __name__ == "__main__":
    main()
