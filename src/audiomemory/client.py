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
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from audiomemory.runtime.codec import CHUNK_BYTES, iter_pieces
from audiomemory.runtime.errors import InvalidInput, shorten
from audiomemory.runtime.security import open_channel
from audiomemory.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

METADATA_KEY = "audiomemory"  # the PNG text chunk holding everything needed to reproduce an image
#: The largest record (UTF-8 bytes of its JSON) a reader takes and the orchestrator writes: Pillow's
#: ``PngImagePlugin.MAX_TEXT_CHUNK``, the most a compressed text chunk may hold for Pillow to read it back.
MAX_RECORD_BYTES = 1 << 20


class UnreadableMetadata(InvalidInput):
    """An image (or an orchestrator's answer) whose Audio Memory record cannot be used; the message is one line
    that names the file."""


def read_metadata(png: bytes | Path, name: str | None = None) -> dict[str, Any] | None:
    """The checked record (``parse_record``) in a PNG's ``audiomemory`` chunk; ``None`` when it has none.

    ``png`` is the file's bytes or its path; ``name`` what messages call it (default: the path). Any other
    bytes — not a PNG, truncated, a record that is not JSON, nested too deep, too big or with a field of
    the wrong type — raise ``UnreadableMetadata`` naming the file, never another exception."""
    label = _printable(name or (str(png) if isinstance(png, Path) else "the image"))
    from PIL import Image

    if isinstance(png, Path) and not png.is_file():  # a FIFO or a device would never end a read
        raise UnreadableMetadata(f"{label}: not a regular file")
    try:
        with Image.open(png if isinstance(png, Path) else io.BytesIO(png)) as image:
            text = getattr(image, "text", {}).get(METADATA_KEY)
    except Exception as exc:  # a parser fed any bytes raises any of a dozen types
        raise UnreadableMetadata(f"{label}: not a PNG Audio Memory can read ({type(exc).__name__}: "
                                 f"{_printable(shorten(exc))})") from None
    return None if text is None else parse_record(str(text), label)


def parse_record(text: str, label: str) -> dict[str, Any]:
    """A record's JSON ``text`` as a dict whose fields the readers use have the types they expect
    (``record_problem``); else ``UnreadableMetadata`` naming ``label``."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_RECORD_BYTES:
        raise UnreadableMetadata(f"{label}: its metadata is {size} bytes, over the {MAX_RECORD_BYTES} a reader takes")
    try:
        record = json.loads(text)
    except RecursionError:
        raise UnreadableMetadata(f"{label}: its metadata nests deeper than a reader follows") from None
    except ValueError as exc:
        raise UnreadableMetadata(f"{label}: its metadata is not JSON ({_printable(shorten(exc))})") from None
    problem = record_problem(record)
    if problem:
        raise UnreadableMetadata(f"{label}: its metadata is not an Audio Memory record ({problem})")
    return dict(record)


_TEXT: tuple[type, ...] = (str,)
_INT: tuple[type, ...] = (int,)
_NUMBER: tuple[type, ...] = (int, float)
#: The fields the readers use (``reproduce``, the gallery, ``generate``'s summary), by section, and the types
#: they must have when present (when absent, the reader's default applies); a record where one has another
#: type is refused whole, so no reader's ``.get`` chain meets a wrong type. ``request`` must parse as the
#: ``CreateImageOptions`` it records; ``lyrics.transcript``, when not null, as ``Transcript.to_dict`` wrote it.
RECORD_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "": {"schema": _INT, "profile": _TEXT, "request": (dict,), "cache_hit": (bool,), "created_unix": _INT},
    "song": {"sha256": _TEXT, "filename": _TEXT, "bytes": _INT, "seconds": _NUMBER},
    "lyrics": {"window": _TEXT, "text": _TEXT, "full": _TEXT, "negative_prompt": _TEXT, "source": _TEXT,
               "transcript": (dict, type(None))},
    "fusion": {"strength": _NUMBER, "projection_seed": _INT},
    "generation": {"seed": _INT, "steps": _INT, "width": _INT, "height": _INT, "scheduler": _TEXT},
}
_TRANSCRIPT = {"text": _TEXT, "language": _TEXT, "seconds": _NUMBER, "segments": (list,)}
_SEGMENT = {"start": _NUMBER, "end": _NUMBER, "text": _TEXT}


def record_problem(record: Any) -> str:
    """What makes ``record`` unfit for the readers (the first field of the wrong type), or ``""``."""
    if not isinstance(record, dict):
        return f"the record: expected an object, got {_kind(record)}"
    for section, fields in RECORD_FIELDS.items():
        part = record.get(section, {}) if section else record
        if not isinstance(part, dict):
            return f"{section}: expected an object, got {_kind(part)}"
        problem = _fields_problem(part, fields, f"{section}." if section else "", required=False)
        if problem:
            return problem
    transcript = record.get("lyrics", {}).get("transcript")
    problem = "" if transcript is None else transcript_problem(transcript)
    if problem:
        return problem
    try:
        json_format.ParseDict(record.get("request", {}), orchestrator_pb2.CreateImageOptions(),
                              ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        return f"request: {_printable(shorten(exc))}"
    return ""


def transcript_problem(transcript: Any) -> str:
    """What makes ``transcript`` other than ``Transcript.to_dict`` writes it (types, finite times), or ``""``."""
    if not isinstance(transcript, dict):
        return f"lyrics.transcript: expected an object, got {_kind(transcript)}"
    problem = _fields_problem(transcript, _TRANSCRIPT, "lyrics.transcript.", required=True)
    for i, segment in enumerate(() if problem else transcript["segments"]):
        where = f"lyrics.transcript.segments[{i}]"
        if not isinstance(segment, dict):
            return f"{where}: expected an object, got {_kind(segment)}"
        problem = _fields_problem(segment, _SEGMENT, f"{where}.", required=True)
        if problem:
            break
    return problem


def _fields_problem(part: dict[str, Any], fields: dict[str, tuple[type, ...]], prefix: str, *, required: bool) -> str:
    for key, types in fields.items():
        if key not in part:
            if required:
                return f"{prefix}{key}: missing"
            continue
        value = part[key]
        fits = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        if not fits or (isinstance(value, float) and not math.isfinite(value)):
            return f"{prefix}{key}: expected {' or '.join(t.__name__ for t in types)}, got {_kind(value)}"
    return ""


def _kind(value: Any) -> str:
    return repr(value) if isinstance(value, float | bool) or value is None else f"a {type(value).__name__}"


def _printable(text: str) -> str:
    """``text`` on one line: as it is when printable, else as Python writes it (escapes for control characters)."""
    return text if text.isprintable() else ascii(text)


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
                    text = response.result.metadata_json
                    meta = parse_record(text, "the orchestrator's record") if text else {}
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
