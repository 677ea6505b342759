"""The bare baseline of the publish benchmark: a minimal grpc.aio server of
``tickstream.v1.IngestService/Publish`` that acknowledges every batch and stores nothing.

``--parse`` decodes each PublishRequest (and answers its batch_id and tick count), as any
protobuf server must; without it the request bytes are not even decoded and every answer is an
empty PublishResponse, which is the gRPC transport's ceiling on this machine (one
HTTP/2 message in, one out). It runs on uvloop, like the feed.

Usage: python bench/ack_server.py PORT [--parse]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator

import grpc
import uvloop
from tickstream.v1 import ingest_pb2

SERVICE = "tickstream.v1.IngestService"


async def ack_raw(requests: AsyncIterator[bytes], _context: object) -> AsyncIterator[bytes]:
    async for _request in requests:
        yield b""


async def ack_parsed(
    requests: AsyncIterator[ingest_pb2.PublishRequest], _context: object
) -> AsyncIterator[ingest_pb2.PublishResponse]:
    async for request in requests:
        yield ingest_pb2.PublishResponse(batch_id=request.batch_id, accepted=len(request.ticks))


async def serve(port: int, parse: bool) -> None:
    """Serve until SIGTERM or SIGINT."""
    if parse:
        handler = grpc.stream_stream_rpc_method_handler(
            ack_parsed,
            request_deserializer=ingest_pb2.PublishRequest.FromString,
            response_serializer=ingest_pb2.PublishResponse.SerializeToString,
        )
    else:  # no (de)serializer: the handler gets and returns bytes
        handler = grpc.stream_stream_rpc_method_handler(ack_raw)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Publish": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--parse", action="store_true", help="decode each PublishRequest")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.parse))
    return 0


if __name__ == "__main__":
    sys.exit(main())
