"""A benchmark producer: publishes pre-serialized batches over one IngestService.Publish stream
as fast as the server acknowledges them, and prints its figures as one JSON line.

Batches are built before the clock starts: ``TEMPLATES`` batches of ``--batch`` ticks (Binance
style: BTCUSDT, ETHUSDT, SOLUSDT, BNBUSDT; 30% trades with a trade id and side, 70% quotes;
prices and sizes as 8-decimal strings; an exchange event time). With ``--dedup`` every tick
carries a dedup id unique to this producer (``b<producer>-<batch>-<index>``, as the client
libraries' Publisher does): the template's placeholder is swapped for the batch number with one
``bytes.replace`` per batch. Without it no tick carries one (nothing is deduplicated). Each
request ends with its ``batch_id``. At most ``--window`` batches are unacknowledged.

Usage: python bench/producer.py TARGET SECONDS [--window N] [--dedup] [--rate TICKS_PER_S]
    [--symbols N] [--start-at EPOCH_S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import grpc
from tickstream.v1 import ingest_pb2, tick_pb2

METHOD = "/tickstream.v1.IngestService/Publish"
SYMBOLS = {"BTCUSDT": 61_837.63, "ETHUSDT": 3_412.18, "SOLUSDT": 142.337, "BNBUSDT": 583.41}
TEMPLATES = 20
PLACEHOLDER = b"##########"  # ten characters: the batch number, zero-padded
TRADE_SHARE = 0.3


def _draft(rng: random.Random, symbol: str, mid: float, now_ns: int) -> ingest_pb2.TickDraft:
    draft = ingest_pb2.TickDraft(symbol=symbol)
    draft.event_time.FromNanoseconds(now_ns - rng.randrange(1_000_000, 50_000_000))
    if rng.random() < TRADE_SHARE:
        draft.trade.CopyFrom(
            tick_pb2.Trade(
                price=f"{mid * (1 + rng.uniform(-1e-4, 1e-4)):.8f}",
                size=f"{rng.uniform(0.0001, 2):.8f}",
                trade_id=str(rng.randrange(3_000_000_000, 4_000_000_000)),
                side=rng.choice((tick_pb2.SIDE_BUY, tick_pb2.SIDE_SELL)),
            )
        )
    else:
        bid = mid * (1 - rng.uniform(0, 1e-4))
        draft.quote.CopyFrom(
            tick_pb2.Quote(
                bid_price=f"{bid:.8f}",
                bid_size=f"{rng.uniform(0.001, 20):.8f}",
                ask_price=f"{bid * (1 + rng.uniform(1e-6, 1e-4)):.8f}",
                ask_size=f"{rng.uniform(0.001, 20):.8f}",
            )
        )
    return draft


def templates(
    batch: int, dedup: bool, producer: int, symbols: int = len(SYMBOLS), seed: int = 7
) -> list[bytes]:
    """``TEMPLATES`` serialized PublishRequests of ``batch`` ticks of the first ``symbols``
    symbols (no batch_id); with ``dedup``, each tick's dedup id holds ``PLACEHOLDER`` where the
    batch number goes."""
    rng = random.Random(seed + producer)
    names = list(SYMBOLS)[:symbols]
    now_ns = time.time_ns()
    out = []
    for _ in range(TEMPLATES):
        request = ingest_pb2.PublishRequest()
        for index in range(batch):
            symbol = names[rng.randrange(len(names))]
            draft = _draft(rng, symbol, SYMBOLS[symbol], now_ns)
            if dedup:
                draft.dedup_id = f"b{producer}-{PLACEHOLDER.decode()}-{index}"
            request.ticks.append(draft)
        out.append(request.SerializeToString())
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def request_bytes(pool: list[bytes], number: int, dedup: bool) -> bytes:
    """Batch ``number`` (from 1): a template, its dedup ids made unique, then its batch_id."""
    body = pool[number % len(pool)]
    if dedup:
        body = body.replace(PLACEHOLDER, b"%010d" % number)
    return body + b"\x10" + _varint(number)


@dataclass
class Figures:
    """What one producer saw. ``acked_ticks`` counts ticks of acknowledged batches; ``accepted``
    and ``duplicates`` are the server's counts (0 from an ack-only server)."""

    producer: int
    batch: int
    window: int
    dedup: bool
    rate: float = 0.0  # ticks/s to pace at; 0 = as fast as acknowledgements allow
    seconds: float = 0.0
    batches_sent: int = 0
    batches_acked: int = 0
    acked_ticks: int = 0
    accepted: int = 0
    duplicates: int = 0
    status: str = ""
    details: str = ""
    window_wait_s: float = 0.0  # waiting for a free slot (all --window batches unacknowledged)
    write_wait_s: float = 0.0  # inside call.write (gRPC flow control holding the write)
    acked_per_s: list[int] = field(default_factory=list)  # ticks acknowledged in each second
    ack_ms_p50: float = 0.0  # send -> acknowledgement of a batch
    ack_ms_p99: float = 0.0
    cpu_s: float = 0.0


async def _reader(
    call: grpc.aio.StreamStreamCall,
    slots: asyncio.Semaphore,
    figures: Figures,
    sent_at: dict[int, float],
    t0: float,
) -> list[float]:
    """Count acknowledgements until the server ends the stream; each frees a window slot."""
    delays: list[float] = []
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            _count(response, figures, t0, sent_at, delays)
            slots.release()
    except grpc.aio.AioRpcError:
        pass  # the call failed: its status is read by the caller
    finally:
        for _ in range(figures.window):  # unblock the writer, which then sees the call done
            slots.release()
    return delays


def _count(
    response: ingest_pb2.PublishResponse,
    figures: Figures,
    t0: float,
    sent_at: dict[int, float],
    delays: list[float],
) -> None:
    now = time.perf_counter()
    figures.batches_acked += 1
    figures.acked_ticks += figures.batch
    figures.accepted += response.accepted
    figures.duplicates += response.duplicates
    second = int(now - t0)
    while len(figures.acked_per_s) <= second:
        figures.acked_per_s.append(0)
    figures.acked_per_s[second] += figures.batch
    started = sent_at.pop(figures.batches_acked, None)
    if started is not None:
        delays.append(now - started)


async def _writer(
    call: grpc.aio.StreamStreamCall,
    slots: asyncio.Semaphore,
    figures: Figures,
    sent_at: dict[int, float],
    pool: list[bytes],
    t0: float,
    seconds: float,
) -> None:
    """Write batches until ``seconds`` have passed; with ``figures.rate``, no faster than that
    many ticks per second (paced), otherwise as fast as window slots free up."""
    clock = time.perf_counter
    number = 0
    deadline = t0 + seconds
    while clock() < deadline and not call.done():
        if figures.rate:
            await asyncio.sleep(max(0.0, t0 + number * figures.batch / figures.rate - clock()))
        before = clock()
        await slots.acquire()
        number += 1
        payload = request_bytes(pool, number, figures.dedup)
        ready = clock()
        sent_at[number] = ready
        await call.write(payload)
        figures.window_wait_s += ready - before
        figures.write_wait_s += clock() - ready
        figures.batches_sent = number
    if not call.done():
        await call.done_writing()


async def publish(target: str, seconds: float, figures: Figures, pool: list[bytes]) -> None:
    """One Publish stream for ``seconds``, then wait for every acknowledgement."""
    async with grpc.aio.insecure_channel(target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        stub = channel.stream_stream(
            METHOD,
            request_serializer=None,  # the requests are bytes already
            response_deserializer=ingest_pb2.PublishResponse.FromString,
        )
        call = stub(metadata=(("tickstream-producer", f"bench-{figures.producer}"),))
        slots = asyncio.Semaphore(figures.window)
        sent_at: dict[int, float] = {}
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        reader = asyncio.ensure_future(_reader(call, slots, figures, sent_at, t0))
        with contextlib.suppress(grpc.aio.AioRpcError):  # the status is read below
            await _writer(call, slots, figures, sent_at, pool, t0, seconds)
        delays = await reader
        figures.seconds = round(time.perf_counter() - t0, 3)
        figures.cpu_s = round(time.process_time() - cpu0, 2)
        figures.status = (await call.code()).name
        figures.details = (await call.details()) or ""
    delays.sort()
    if delays:
        figures.ack_ms_p50 = round(1000 * delays[len(delays) // 2], 2)
        figures.ack_ms_p99 = round(1000 * delays[int(len(delays) * 0.99)], 2)
    figures.window_wait_s = round(figures.window_wait_s, 2)
    figures.write_wait_s = round(figures.write_wait_s, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", help="HOST:PORT of the IngestService")
    parser.add_argument("seconds", type=float)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--window", type=int, default=16, help="most unacknowledged batches")
    parser.add_argument("--dedup", action="store_true", help="a unique dedup id on every tick")
    parser.add_argument("--producer", type=int, default=0, help="this producer's number")
    parser.add_argument("--rate", type=float, default=0.0, help="pace at this many ticks/s")
    parser.add_argument("--symbols", type=int, default=len(SYMBOLS), help="how many symbols")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start (epoch s)")
    args = parser.parse_args()
    pool = templates(args.batch, args.dedup, args.producer, args.symbols)
    figures = Figures(args.producer, args.batch, args.window, args.dedup, args.rate)
    print("ready", file=sys.stderr, flush=True)
    delay = args.start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    import uvloop

    uvloop.run(publish(args.target, args.seconds, figures, pool))
    print(json.dumps(asdict(figures)), flush=True)
    return 0 if figures.status == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
