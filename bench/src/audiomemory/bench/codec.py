"""Benchmark the wire codec and chunked streaming against this machine's memcpy and raw loopback socket.

Measures, in one run, on a 100 MB float32 tensor:
- memcpy: numpy copy of the same bytes (the ceiling for anything that must touch every byte);
- codec: ``to_tensor`` + ``from_tensor`` (validated, finite-checked, zero-copy decode);
- wire: the same plus protobuf's serialize and parse of the message;
- socket: a raw Python TCP loopback transfer (sendall / recv_into);
- stream: the tensor as ``TensorChunk`` pieces over a real loopback gRPC client stream into a
  ``TensorAssembler`` on the server (our runtime's server options and chunk size).
Prints a table and, last, one JSON line with GiB/s figures.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np

from audiomemory.bench.common import best_of
from audiomemory.runtime import codec
from audiomemory.v1 import tensor_pb2

GiB = float(1 << 30)
METHOD = "/bench.Sink/Push"


def bench_memcpy(arr: np.ndarray, repeat: int) -> float:
    dst = np.empty_like(arr)
    np.copyto(dst, arr)  # fault the pages in first
    return best_of(lambda: np.copyto(dst, arr), repeat)


def bench_codec(arr: np.ndarray, repeat: int) -> float:
    """Our codec alone: ``to_tensor`` then the validated, finite-checked ``from_tensor`` of that message."""
    return best_of(lambda: codec.from_tensor(codec.to_tensor(arr), field="x", finite=True), repeat)


def bench_wire(arr: np.ndarray, repeat: int) -> float:
    """The codec plus protobuf's own serialize and parse (what a message on the wire costs)."""

    def run() -> None:
        wire = codec.to_tensor(arr).SerializeToString()
        codec.from_tensor(tensor_pb2.Tensor.FromString(wire), field="x", finite=True)

    return best_of(run, repeat)


def bench_socket(arr: np.ndarray, repeat: int) -> float:
    payload = memoryview(arr.reshape(-1).view(np.uint8).data)
    n = len(payload)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sink = bytearray(n)

    def receive(conn: socket.socket) -> None:
        view, got = memoryview(sink), 0
        while got < n:
            got += conn.recv_into(view[got:], min(n - got, 1 << 22))

    def run() -> None:
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = listener.accept()
        t = threading.Thread(target=receive, args=(conn,))
        t.start()
        client.sendall(payload)
        t.join()
        client.close()
        conn.close()

    try:
        return best_of(run, repeat)
    finally:
        listener.close()


def bench_stream(arr: np.ndarray, repeat: int, chunk_bytes: int) -> float:
    def push(requests: Iterator[tensor_pb2.TensorChunk], context: grpc.ServicerContext) -> tensor_pb2.Tensor:
        out = codec.assemble_tensor(requests, "x", max_bytes=arr.nbytes, finite=True)
        return tensor_pb2.Tensor(shape=out.shape)

    handler = grpc.method_handlers_generic_handler(
        "bench.Sink",
        {"Push": grpc.stream_unary_rpc_method_handler(
            push, request_deserializer=tensor_pb2.TensorChunk.FromString,
            response_serializer=tensor_pb2.Tensor.SerializeToString)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.stream_unary(METHOD, request_serializer=tensor_pb2.TensorChunk.SerializeToString,
                                response_deserializer=tensor_pb2.Tensor.FromString)
    try:
        call(iter(codec.iter_tensor_chunks(arr[:1024], chunk_bytes)), timeout=30)  # warm the channel
        return best_of(lambda: call(codec.iter_tensor_chunks(arr, chunk_bytes), timeout=300), repeat)
    finally:
        channel.close()
        server.stop(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-bytes", type=int, default=codec.CHUNK_BYTES)
    args = parser.parse_args(argv)
    arr = np.random.default_rng(0).standard_normal(args.megabytes * 1_000_000 // 4, dtype=np.float32)
    size = arr.nbytes
    results = {
        "memcpy": bench_memcpy(arr, args.repeat),
        "codec": bench_codec(arr, args.repeat),
        "wire": bench_wire(arr, args.repeat),
        "socket": bench_socket(arr, args.repeat),
        "stream": bench_stream(arr, args.repeat, args.chunk_bytes),
    }
    gib_s = {k: size / v / GiB for k, v in results.items()}
    print(f"{size / 1e6:.0f} MB float32, best of {args.repeat}, chunk {args.chunk_bytes} bytes")
    print(f"{'path':8} {'seconds':>8} {'GiB/s':>7} {'vs memcpy':>9} {'vs socket':>9}")
    for name, seconds in results.items():
        print(f"{name:8} {seconds:8.3f} {gib_s[name]:7.2f} {gib_s[name] / gib_s['memcpy']:9.2f} "
              f"{gib_s[name] / gib_s['socket']:9.2f}")
    summary = {f"{k}_gib_s": round(v, 3) for k, v in gib_s.items()}
    summary["codec_over_memcpy"] = round(gib_s["codec"] / gib_s["memcpy"], 3)
    summary["stream_over_socket"] = round(gib_s["stream"] / gib_s["socket"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
