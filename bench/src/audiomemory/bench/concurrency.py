"""grpc.aio against structured threads for the orchestrator's relay (docs/DESIGN.md §1, the concurrency choice).

A job's hot path in the orchestrator is a relay: the separator's stream of stem pieces handed to the audio
encoder's request stream (and the encoder's replies read back) — the rest is waiting. This measures that
relay alone, both ways, over real gRPC on loopback: a source server streams ``megabytes`` in pieces of
``piece_kib`` (as the separator does), a sink server consumes a request stream and answers each piece (as the
encoder does), and ``jobs`` relays run at once through

- **threads**: grpcio's synchronous client, one thread pumping the source into a bounded ``queue.Queue``,
  the sink's request iterator draining it, the caller's thread reading the sink's replies (the job's style);
- **aio**: ``grpc.aio`` on one event loop, an ``asyncio.Queue`` between an ``async for`` over the source and
  the sink's async request generator, the jobs under ``asyncio.gather`` (TGI's and KServe's style).

Printed: wall seconds, process CPU seconds and MB/s for each, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc

_SOURCE = "/bench.Relay/Source"
_SINK = "/bench.Relay/Sink"
_END = b""


def _handlers(piece: bytes, pieces: int) -> grpc.GenericRpcHandler:
    def source(request: bytes, context: Any) -> Iterator[bytes]:
        for _ in range(pieces):
            yield piece

    def sink(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for i, _ in enumerate(requests):
            yield i.to_bytes(8, "little")

    return grpc.method_handlers_generic_handler("bench.Relay", {
        "Source": grpc.unary_stream_rpc_method_handler(source),
        "Sink": grpc.stream_stream_rpc_method_handler(sink),
    })


def serve(piece_kib: int, pieces: int) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers((_handlers(b"\0" * (piece_kib * 1024), pieces),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _thread_job(channel: grpc.Channel) -> int:
    source = channel.unary_stream(_SOURCE)
    sink = channel.stream_stream(_SINK)
    feed: queue.Queue[bytes] = queue.Queue(32)

    def pump() -> None:
        for piece in source(b""):
            feed.put(piece)
        feed.put(_END)

    def requests() -> Iterator[bytes]:
        while (piece := feed.get()) != _END:
            yield piece

    thread = threading.Thread(target=pump)
    thread.start()
    answers = sum(1 for _ in sink(requests()))
    thread.join()
    return answers


def run_threads(address: str, jobs: int) -> int:
    options = [("grpc.max_receive_message_length", 8 << 20)]
    with grpc.insecure_channel(address, options=options) as channel, futures.ThreadPoolExecutor(jobs) as pool:
        return sum(pool.map(lambda _: _thread_job(channel), range(jobs)))


async def _aio_job(channel: grpc.aio.Channel) -> int:
    source = channel.unary_stream(_SOURCE)
    sink = channel.stream_stream(_SINK)
    feed: asyncio.Queue[bytes] = asyncio.Queue(32)

    async def pump() -> None:
        async for piece in source(b""):
            await feed.put(piece)
        await feed.put(_END)

    async def requests() -> AsyncIterator[bytes]:
        while (piece := await feed.get()) != _END:
            yield piece

    task = asyncio.create_task(pump())
    answers = 0
    async for _ in sink(requests()):
        answers += 1
    await task
    return answers


async def _aio_all(address: str, jobs: int) -> int:
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 8 << 20)]) as ch:
        return sum(await asyncio.gather(*(_aio_job(ch) for _ in range(jobs))))


def run_aio(address: str, jobs: int) -> int:
    return asyncio.run(_aio_all(address, jobs))


def measure(megabytes: int = 256, piece_kib: int = 256, jobs: int = 2, repeats: int = 3) -> dict[str, Any]:
    """Both styles, alternated ``repeats`` times; the best of each."""
    pieces = max(1, megabytes * 1024 // piece_kib)
    server, address = serve(piece_kib, pieces)
    best: dict[str, tuple[float, float]] = {}
    try:
        for _ in range(repeats):
            for name, run in (("threads", run_threads), ("aio", run_aio)):
                wall, cpu = time.perf_counter(), time.process_time()
                answered = run(address, jobs)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                assert answered == pieces * jobs, (name, answered)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu)
    finally:
        server.stop(0)
    total_mb = pieces * piece_kib * jobs / 1024
    out: dict[str, Any] = {"megabytes_per_job": megabytes, "piece_kib": piece_kib, "jobs": jobs}
    for name, (wall, cpu) in best.items():
        out[name] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "mb_per_s": round(total_mb / wall, 1)}
    out["aio_over_threads_wall"] = round(best["aio"][0] / best["threads"][0], 3)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The orchestrator's relay over gRPC: threads against grpc.aio.")
    parser.add_argument("--megabytes", type=int, default=256, help="relayed per job")
    parser.add_argument("--piece-kib", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=2, help="relays at once")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.megabytes, args.piece_kib, args.jobs, args.repeats)))
