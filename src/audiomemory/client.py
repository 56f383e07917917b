"""A small Python client for the orchestrator.

    from audiomemory.client import Client

    with Client("127.0.0.1:50051") as client:
        for event in client.create_image("song.mp3", lyrics=open("lyrics.txt").read(), seed=7):
            print(event)                      # StageEvent protos, then one ImageResult
        # or: result = client.generate("song.mp3", lyrics=..., seed=7); result.png, result.metadata
        # or: job = client.start_image(...); iterate it in one thread, job.cancel() from another
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from audiomemory.runtime.codec import CHUNK_BYTES, iter_pieces
from audiomemory.runtime.security import open_channel
from audiomemory.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

METADATA_KEY = "audiomemory"  # the PNG text chunk holding everything needed to reproduce an image


def read_metadata(png: bytes) -> dict[str, Any] | None:
    """The ``audiomemory`` JSON chunk of a result PNG, or ``None`` when the image has none."""
    from PIL import Image

    text = getattr(Image.open(io.BytesIO(png)), "text", {}).get(METADATA_KEY)
    return None if text is None else dict(json.loads(text))


def status_text(err: grpc.RpcError) -> str:
    """A failed call's status as a person reads it: ``CODE: details``."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    return f"{code.name if code is not None else 'UNKNOWN'}: {details}"


@dataclass
class ImageResult:
    """The finished image: PNG bytes (with metadata text chunks) and the metadata as a dict."""

    png: bytes
    metadata: dict[str, Any] = field(default_factory=dict)


def build_options(lyrics: str = "", *, filename: str = "", **kwargs: Any) -> orchestrator_pb2.CreateImageOptions:
    """``CreateImageOptions`` from keyword arguments; ``None`` (or leaving one out) means the server's default."""
    options = orchestrator_pb2.CreateImageOptions(lyrics=lyrics, filename=filename)
    for key, value in kwargs.items():
        if value is not None:
            setattr(options, key, value)
    return options


def file_pieces(path: Path, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The file at ``path`` in pieces of ``size`` bytes, read as they are sent: never whole in memory."""
    with path.open("rb") as f:
        piece = f.read(size)
        yield piece  # an empty file is one empty piece, as ``iter_pieces`` gives
        while piece := f.read(size):
            yield piece


class ImageJob:
    """One running ``CreateImage``: iterate it for ``StageEvent`` protos, then one ``ImageResult``.
    ``cancel()`` (from any thread) cancels the call, which is how the orchestrator learns to stop the job:
    the iteration then raises ``grpc.RpcError`` with ``CANCELLED``."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> None:
        self._call.cancel()

    def __iter__(self) -> Iterator[orchestrator_pb2.StageEvent | ImageResult]:
        png = bytearray()
        for response in self._call:
            if response.HasField("event"):
                yield response.event
            else:
                png += response.result.png
                if response.result.last:
                    meta = json.loads(response.result.metadata_json) if response.result.metadata_json else {}
                    yield ImageResult(bytes(png), meta)


class Client:
    """Talks to one orchestrator address (host:port or any gRPC target)."""

    def __init__(self, address: str, *, timeout: float | None = None, tls_ca: Path | None = None,
                 tls_cert: Path | None = None, tls_key: Path | None = None, token: str | None = None) -> None:
        """``tls_ca`` (and ``tls_cert``/``tls_key`` for mTLS) for a TLS front door; ``token`` is sent as
        ``authorization: Bearer`` on every call (TLS only)."""
        self.address = address
        self.timeout = timeout
        self._channel = open_channel(address, ca=tls_ca, cert=tls_cert, key=tls_key, token=token)
        self._stub = orchestrator_pb2_grpc.OrchestratorStub(self._channel)

    @property
    def channel(self) -> grpc.Channel:
        """The channel (with this client's TLS and token) for other stubs, e.g. health or a service's Describe."""
        return self._channel

    def describe(self) -> orchestrator_pb2.OrchestratorInfo:
        return self._stub.Describe(common_pb2.DescribeRequest(), timeout=self.timeout or 30)

    def create_image(self, song: bytes | str | Path, *, lyrics: str = "",
                     request: orchestrator_pb2.CreateImageOptions | None = None, **options: Any
                     ) -> Iterator[orchestrator_pb2.StageEvent | ImageResult]:
        """Stream a job: ``StageEvent`` protos as the job advances, then one ``ImageResult``.

        Options are keyword arguments (see ``build_options``), or a whole ``request`` (e.g. the one an
        image's metadata recorded), which then stands alone.
        """
        job = self.start_image(song, lyrics=lyrics, request=request, **options)
        try:
            yield from job
        finally:
            job.cancel()  # no-op when finished; stops the job if the caller stops iterating

    def start_image(self, song: bytes | str | Path, *, lyrics: str = "",
                    request: orchestrator_pb2.CreateImageOptions | None = None, **options: Any) -> ImageJob:
        """Start a job (as ``create_image``) and return its handle, which another thread may cancel."""
        if isinstance(song, str | Path):
            path = Path(song)
            with path.open("rb"):  # a missing file fails here, in the caller's thread
                pass
            options.setdefault("filename", path.name)
            pieces = file_pieces(path)
        else:
            pieces = (piece for piece, _ in iter_pieces(song))
        opts = request if request is not None else build_options(lyrics, **options)

        def requests() -> Iterator[orchestrator_pb2.CreateImageRequest]:
            yield orchestrator_pb2.CreateImageRequest(options=opts)
            for piece in pieces:
                yield orchestrator_pb2.CreateImageRequest(file_chunk=piece)

        return ImageJob(self._stub.CreateImage(requests(), timeout=self.timeout))

    def generate(self, song: bytes | str | Path, *, lyrics: str = "", **options: Any) -> ImageResult:
        """Run a job to the end and return its image."""
        for event in self.create_image(song, lyrics=lyrics, **options):
            if isinstance(event, ImageResult):
                return event
        raise RuntimeError("the orchestrator ended the stream without an image")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
