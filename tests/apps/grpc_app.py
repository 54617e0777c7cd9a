"""A real gRPC server (grpcio) for the gRPC-through-tlsfront test.

    PORT=0 python grpc_app.py      (listens on 127.0.0.1 only, cleartext
                                   HTTP/2: an h2c:// upstream; prints
                                   "listening on <port>" once ready)

Methods of service `demo.Echo`, raw bytes in and out (no protobuf code
generation needed):

    Unary         replies b"echo:" + request + b" proto=" + the x-forwarded-proto
                  it was sent; trailing metadata x-trailer: unary-done
    ServerStream  replies request + b"#1", b"#2", b"#3" as three messages;
                  trailing metadata x-trailer: stream-done
    Fail          status PERMISSION_DENIED "not for you" with no message at all
                  (a "Trailers-Only" response: status in the only HEADERS frame);
                  trailing metadata x-trailer: failed
"""

from __future__ import annotations

import os
from concurrent import futures

import grpc


def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    metadata = dict(context.invocation_metadata())
    proto = metadata.get("x-forwarded-proto", "-")
    context.set_trailing_metadata((("x-trailer", "unary-done"),))
    return b"echo:" + request + b" proto=" + proto.encode()


def server_stream(request: bytes, context: grpc.ServicerContext):
    context.set_trailing_metadata((("x-trailer", "stream-done"),))
    for i in (1, 2, 3):
        yield request + b"#" + str(i).encode()


def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-trailer", "failed"),))
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you")


HANDLERS = grpc.method_handlers_generic_handler(
    "demo.Echo",
    {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    },
)


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((HANDLERS,))
    port = server.add_insecure_port(f"127.0.0.1:{os.environ.get('PORT', '0')}")
    server.start()
    print(f"listening on {port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
