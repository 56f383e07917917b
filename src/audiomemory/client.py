"""A small Python client for the orchestrator.

    from audiomemory.client import Client

    with Client("127.0.0.1:50051") as client:
        for event in client.create_image("song.mp3", lyrics=open("lyrics.txt").read(), seed=7):
            print(event)                      # StageEvent protos, then one ImageResult
        # or: result = client.generate("song.mp3", lyrics=..., seed=7); result.png, result.record
        # or: job = client.start_image(...); iterate it in one thread, job.cancel() from another
        # a reel: client.create_reel("song.mp3", sections=4) → events, ReelSections, each reel.SectionResult

    record = read_record(Path("memory.png"))  # an image's ImageRecord (record.proto), None when it has none
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from audiomemory.runtime import identity
from audiomemory.runtime.codec import CHUNK_BYTES, iter_pieces
from audiomemory.runtime.errors import InvalidInput, shorten
from audiomemory.runtime.security import open_channel
from audiomemory.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc, record_pb2, transcriber_pb2

if TYPE_CHECKING:
    from audiomemory.reel import ReelJob, SectionResult

METADATA_KEY = "audiomemory"  # the PNG text chunk holding the image's record (record.proto's ImageRecord)
PARAMETERS_KEY = "parameters"  # the A1111-style text chunk every result PNG carries (prompt, steps, seed…)
#: The largest record (UTF-8 bytes of its JSON) a reader takes and the orchestrator writes: Pillow's
#: ``PngImagePlugin.MAX_TEXT_CHUNK``, the most a compressed text chunk may hold for Pillow to read it back.
MAX_RECORD_BYTES = 1 << 20
SCHEMA = 2  # ImageRecord.schema the orchestrator writes; 1: the untyped record before it


class UnreadableMetadata(InvalidInput):
    """An image (or an orchestrator's answer) whose Audio Memory record cannot be used; the message is one line
    that names the file."""


def record_dict(record: record_pb2.ImageRecord) -> dict[str, Any]:
    """``record`` as JSON data (proto field names, every field): what a sidecar and ``record_json`` hold."""
    return json_format.MessageToDict(record, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def record_json(record: record_pb2.ImageRecord) -> str:
    """The one JSON form of a record: the PNG's ``audiomemory`` chunk and ``ImageResult.metadata_json``."""
    return json.dumps(record_dict(record), sort_keys=True, ensure_ascii=False)


def read_png_text(png: bytes | Path, name: str = "") -> dict[str, str]:
    """A PNG's text chunks (``METADATA_KEY``, ``PARAMETERS_KEY``, …): the one PNG reader. ``png`` is the file's
    bytes or its path; ``name`` what messages call it (default: the path). Any bytes that are not a PNG Pillow
    reads raise ``UnreadableMetadata`` naming the file, never another exception."""
    label = _printable(name or (str(png) if isinstance(png, Path) else "the image"))
    from PIL import Image

    if isinstance(png, Path) and not png.is_file():  # a FIFO or a device would never end a read
        raise UnreadableMetadata(f"{label}: not a regular file")
    try:
        with Image.open(png if isinstance(png, Path) else io.BytesIO(png)) as image:
            return {str(k): str(v) for k, v in getattr(image, "text", {}).items()}
    except Exception as exc:  # a parser fed any bytes raises any of a dozen types
        raise UnreadableMetadata(f"{label}: not a PNG Audio Memory can read ({type(exc).__name__}: "
                                 f"{_printable(shorten(exc))})") from None


def read_record(png: bytes | Path, name: str = "") -> record_pb2.ImageRecord | None:
    """The record in a PNG's ``audiomemory`` chunk (``record_from_json``); ``None`` when it has none.

    Any other bytes — not a PNG, truncated, a record that is not JSON, nested too deep, too big or with a
    field of the wrong type — raise ``UnreadableMetadata`` naming the file, never another exception."""
    label = _printable(name or (str(png) if isinstance(png, Path) else "the image"))
    text = read_png_text(png, label).get(METADATA_KEY)
    return None if text is None else record_from_json(text, label)


def record_from_json(text: str, name: str = "the record") -> record_pb2.ImageRecord:
    """A record's JSON (a PNG's chunk, a sidecar, ``metadata_json``) as an ``ImageRecord``; a schema-1 record
    (the untyped dict before ``ImageRecord``) is translated (``_from_schema_1``). Unknown fields are ignored;
    else ``UnreadableMetadata`` naming ``name`` and the field, never quoting the payload."""
    label = _printable(name)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_RECORD_BYTES:
        raise UnreadableMetadata(f"{label}: its metadata is {size} bytes, over the {MAX_RECORD_BYTES} a reader takes")
    try:
        data = json.loads(text)
    except RecursionError:
        raise UnreadableMetadata(f"{label}: its metadata nests deeper than a reader follows") from None
    except ValueError as exc:
        raise UnreadableMetadata(f"{label}: its metadata is not JSON ({_printable(shorten(exc))})") from None
    schema = data.get("schema", 1) if isinstance(data, dict) else SCHEMA
    legacy = schema in (1, "1") and not isinstance(schema, bool)
    data = _from_schema_1(data) if legacy else data
    try:
        problem = _shape_problem(data, record_pb2.ImageRecord.DESCRIPTOR, "")
        if problem:
            raise UnreadableMetadata(problem)
        record = json_format.ParseDict(data, record_pb2.ImageRecord(), ignore_unknown_fields=True)
    except UnreadableMetadata as exc:
        raise UnreadableMetadata(f"{label}: its metadata is not an Audio Memory record ({exc})") from None
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        where = ".".join(re.findall(r"Failed to parse (\w+) field", str(exc))) or "the record"
        raise UnreadableMetadata(f"{label}: its metadata is not an Audio Memory record ({where}: a value out of "
                                 "range or of the wrong form)") from None
    if legacy:
        _identify_schema_1(record)
    return record


def _from_schema_1(old: Any) -> Any:
    """A schema-1 record (today's sections by name; ``services``: each kind's whole ``Describe`` in camelCase;
    ``request`` in camelCase, maybe with the ``strengthSet``/``guidanceSet`` of before strength and guidance
    had presence, a 0 left out) as ``ImageRecord`` JSON data; ``_identify_schema_1`` finishes it once parsed."""
    if not isinstance(old, dict):
        return old
    new = {key: value for key, value in old.items() if key not in ("services", "request")}
    new["schema"] = 1
    request = old.get("request")
    if isinstance(request, dict):
        request = dict(request)
        for name in ("strength", "guidance"):
            if request.pop(f"{name}Set", False):
                request.setdefault(name, 0.0)
    new["request"] = request
    services = old.get("services")
    if isinstance(services, dict):  # each kind's Describe: its ``model`` is the ModelInfo
        new["served"] = {kind: {"model": info.get("model")} if isinstance(info, dict) else info
                         for kind, info in services.items()}
    elif services is not None:
        new["served"] = services
    return new


def _identify_schema_1(record: record_pb2.ImageRecord) -> None:
    """The identities a schema-1 record's ``Describe`` infos stand for, and the generator's steps and guidance
    as its ``generation`` recorded them (the resolution a schema-2 call header carries)."""
    gen = record.generation
    for kind, header in record.served.items():
        resolved = {"steps": gen.steps, "guidance": gen.guidance} if kind == "generator" else {}
        header.CopyFrom(identity.served(header.model, resolved))


_INTEGERS = frozenset({
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64})
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def _shape_problem(value: Any, descriptor: Descriptor, path: str) -> str:
    """The first field of ``value`` (JSON data for ``descriptor``) whose JSON type is not its field's — an object
    for a message or a map, a list for a repeated field, a finite number for a float… — or ``""``. Unknown
    fields and nulls are left to ``ParseDict`` (which ignores and clears them); so is an integer's range."""
    if not isinstance(value, dict):
        return f"{path or 'the record'}: expected an object, got {_kind(value)}"
    fields = {**{f.json_name: f for f in descriptor.fields}, **{f.name: f for f in descriptor.fields}}
    for key, item in value.items():
        field = fields.get(key) if isinstance(key, str) else None
        if field is None or item is None:
            continue
        where = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            if not isinstance(item, dict):
                return f"{where}: expected an object, got {_kind(item)}"
            entry = field.message_type.fields_by_name["value"]
            parts = [(f"{where}.{k}" if _KEY.fullmatch(str(k)) else f"{where}[…]", v) for k, v in item.items()]
        elif field.is_repeated:
            if not isinstance(item, list):
                return f"{where}: expected a list, got {_kind(item)}"
            entry, parts = field, [(f"{where}[{i}]", v) for i, v in enumerate(item)]
        else:
            entry, parts = field, [(where, item)]
        for at, part in parts:
            problem = _value_problem(part, entry, at)
            if problem:
                return problem
    return ""


def _value_problem(value: Any, field: FieldDescriptor, where: str) -> str:
    kind = field.type
    if field.message_type is not None:
        return _shape_problem(value, field.message_type, where)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        fits, expected = number and math.isfinite(value), "a finite number"
    elif kind in _INTEGERS:  # 64-bit integers are strings in proto3's JSON
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        fits, expected = (number and whole) or isinstance(value, str), "an integer"
    elif kind == FieldDescriptor.TYPE_BOOL:
        fits, expected = isinstance(value, bool), "true or false"
    elif kind == FieldDescriptor.TYPE_ENUM:
        fits, expected = isinstance(value, str) or (number and isinstance(value, int)), "an enum name"
    else:  # string, bytes (base64)
        fits, expected = isinstance(value, str), "a string"
    return "" if fits or value is None else f"{where}: expected {expected}, got {_kind(value)}"


def transcript_problem(transcript: Any) -> str:
    """What makes ``transcript`` other than ``Transcript.to_dict`` writes it (types, finite times), or ``""``
    (the orchestrator's cache reads its transcripts with it)."""
    if not isinstance(transcript, dict):
        return f"transcript: expected an object, got {_kind(transcript)}"
    missing = [key for key in ("text", "language", "seconds", "segments") if key not in transcript]
    segments = transcript.get("segments")
    if not missing and isinstance(segments, list):
        missing = [f"segments[{i}].{key}" for i, s in enumerate(segments) if isinstance(s, dict)
                   for key in ("start", "end", "text") if key not in s]
    if missing:
        return f"transcript.{missing[0]}: missing"
    return _shape_problem(transcript, transcriber_pb2.Transcript.DESCRIPTOR, "transcript")


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
    """The finished image: PNG bytes (with its text chunks) and its record."""

    png: bytes
    record: record_pb2.ImageRecord = field(default_factory=record_pb2.ImageRecord)

    @property
    def metadata(self) -> dict[str, Any]:
        """The record as JSON data (``record_dict``), for JSON output; readers use ``record``."""
        return record_dict(self.record)


def build_options(lyrics: str = "", *, filename: str = "", **kwargs: Any) -> orchestrator_pb2.CreateImageOptions:
    """``CreateImageOptions`` from keyword arguments; ``None`` (or leaving one out) means the server's default. A
    map field takes a dict (``stem_weights={"vocals": 1.5}``), a repeated one a list (``timed_lyrics``)."""
    options = orchestrator_pb2.CreateImageOptions(lyrics=lyrics, filename=filename)
    for key, value in kwargs.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            getattr(options, key).update(value)
        elif isinstance(value, list | tuple):
            getattr(options, key).extend(value)
        else:
            setattr(options, key, value)
    return options


def file_pieces(path: Path, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The file at ``path`` in pieces of ``size`` bytes, read as they are sent: never whole in memory."""
    with path.open("rb") as f:
        piece = f.read(size)
        yield piece  # an empty file is one empty piece, as ``iter_pieces`` gives
        while piece := f.read(size):
            yield piece


class Call:
    """A running call's handle: ``cancel()`` (from any thread) cancels it."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> None:
        self._call.cancel()


class ImageJob(Call):
    """One running ``CreateImage``: iterate it for ``StageEvent`` protos, then one ``ImageResult``.
    ``cancel()`` (from any thread) cancels the call, which is how the orchestrator learns to stop the job:
    the iteration then raises ``grpc.RpcError`` with ``CANCELLED``."""

    def __iter__(self) -> Iterator[orchestrator_pb2.StageEvent | ImageResult]:
        png = bytearray()
        for response in self._call:
            if response.HasField("event"):
                yield response.event
            else:
                png += response.result.png
                if response.result.last:
                    text = response.result.metadata_json
                    record = record_from_json(text, "the orchestrator's record") if text else None
                    yield ImageResult(bytes(png), record or record_pb2.ImageRecord())


def _requests(message: Any, options: Any, pieces: Iterator[bytes]) -> Iterator[Any]:
    """A job's request stream: its options, then the song file's pieces."""
    yield message(options=options)
    for piece in pieces:
        yield message(file_chunk=piece)


def _song_pieces(song: bytes | str | Path, options: dict[str, Any]) -> Iterator[bytes]:
    """A song file's pieces (its name into ``options["filename"]`` unless set), or bytes' pieces."""
    if isinstance(song, str | Path):
        path = Path(song)
        with path.open("rb"):  # a missing file fails here, in the caller's thread
            pass
        options.setdefault("filename", path.name)
        return file_pieces(path)
    return (piece for piece, _ in iter_pieces(song))


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
        pieces = _song_pieces(song, options)
        opts = request if request is not None else build_options(lyrics, **options)
        requests = _requests(orchestrator_pb2.CreateImageRequest, opts, pieces)
        return ImageJob(self._stub.CreateImage(requests, timeout=self.timeout))

    def create_reel(self, song: bytes | str | Path, **kwargs: Any
                    ) -> Iterator[orchestrator_pb2.StageEvent | orchestrator_pb2.ReelSections | SectionResult]:
        """Stream a reel (``start_reel``'s arguments): ``StageEvent`` protos, the ``ReelSections`` found, then
        each section's image (``SectionResult``) as it is painted."""
        job = self.start_reel(song, **kwargs)
        try:
            yield from job
        finally:
            job.cancel()

    def start_reel(self, song: bytes | str | Path, *, lyrics: str = "", sections: int = 0,
                   min_section_seconds: int = 0, max_sections: int = 0, seed_per_section: bool = False,
                   request: orchestrator_pb2.ReelOptions | None = None, **options: Any) -> ReelJob:
        """Start a reel (as ``create_reel``) and return its handle, which another thread may cancel."""
        pieces = _song_pieces(song, options)
        opts = request if request is not None else orchestrator_pb2.ReelOptions(
            image=build_options(lyrics, **options), sections=sections, min_section_seconds=min_section_seconds,
            max_sections=max_sections, seed_per_section=seed_per_section)
        from audiomemory.reel import ReelJob  # PyAV and Pillow load with the first reel

        return ReelJob(self._stub.CreateReel(_requests(orchestrator_pb2.CreateReelRequest, opts, pieces),
                                             timeout=self.timeout))

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
