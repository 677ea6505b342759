"""Server reflection under both of its names: ``grpc.reflection.v1alpha.ServerReflection``
(grpcio-reflection's) and ``grpc.reflection.v1.ServerReflection``, which newer tools (grpcurl,
Postman, grpcui) try first.

grpcio-reflection 1.85 implements v1alpha only. v1's ``reflection.proto`` is v1alpha's,
message for message and field for field, under another package: the bytes on the wire are the
same. So the one servicer answers both names. Under v1 a client can list services and describe
every tickstream and health service; describing the v1 reflection service itself finds nothing,
since its descriptor is not in this process.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection of ``service_names`` (and of both reflection services) on ``server``."""
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    handlers = {"ServerReflectionInfo": v1}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, handlers),)
    )
