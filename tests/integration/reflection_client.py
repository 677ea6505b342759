"""A gRPC client with no generated code: it learns the contract from server reflection.

Run as ``python reflection_client.py HOST:PORT SYMBOL COUNT``; prints the services it found, then
COUNT ticks from the start of SYMBOL's history as JSON lines. Stands in for a client written in any
language with a reflection-aware tool (grpcurl, Postman, ...).
"""

from __future__ import annotations

import json
import sys

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main(target: str, symbol: str, count: int) -> None:
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        print(json.dumps({"services": sorted(database.get_services())}), flush=True)
        pool = DescriptorPool(database)
        method = pool.FindServiceByName("tickstream.v1.FeedService").methods_by_name["Subscribe"]
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)
        request = json_format.ParseDict({"symbols": [symbol], "earliest": True}, request_class())
        subscribe = channel.unary_stream(
            "/tickstream.v1.FeedService/Subscribe",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        seen = 0
        call = subscribe(request, timeout=30)
        for response in call:
            for tick in json_format.MessageToDict(response).get("ticks", {}).get("ticks", []):
                print(json.dumps(tick), flush=True)
                seen += 1
                if seen >= count:
                    call.cancel()
                    break
            if seen >= count:
                break
    assert "tickstream" not in sys.modules, "the client must not import generated code"


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
