"""The bad-input catalogue, part two: the orchestrator's cases (song files and job options, an image's and a
reel's).

The orchestrator under test accepts uploads of at most 2 MB and songs of at most 8 s
(``orchestrator.conftest.orchestrator``); files are made here with PyAV's encoders.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import grpc
import numpy as np
from orchestrator.songs import encode_samples, encode_song
from PIL import Image

from audiomemory.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from .catalogue import EXHAUSTED, INVALID, OK, Call, Case

Request = orchestrator_pb2.CreateImageRequest
Options = orchestrator_pb2.CreateImageOptions
MAX_UPLOAD = 2_000_000


def job(*requests: Request) -> Call:
    def call(channel: grpc.Channel) -> list[Any]:
        return list(orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(iter(requests), timeout=120))

    return call


def upload(data: bytes, **options: Any) -> Call:
    """Options (one step, 64x64 unless said), then ``data`` in pieces of 256 KiB."""
    opts = Options(**{"steps": 1, "width": 64, "height": 64, **options})
    pieces = [Request(file_chunk=data[i : i + 256 * 1024]) for i in range(0, len(data), 256 * 1024)]
    return job(Request(options=opts), *pieces)


ReelRequest = orchestrator_pb2.CreateReelRequest


def reel(*requests: ReelRequest) -> Call:
    def call(channel: grpc.Channel) -> list[Any]:
        return list(orchestrator_pb2_grpc.OrchestratorStub(channel).CreateReel(iter(requests), timeout=120))

    return call


def reel_upload(data: bytes, *, image: dict[str, Any] | None = None, **options: Any) -> Call:
    """A reel's options (its image one step, 64x64 unless said), then ``data`` in pieces of 256 KiB."""
    opts = orchestrator_pb2.ReelOptions(image=Options(**{"steps": 1, "width": 64, "height": 64, **(image or {})}),
                                        **options)
    pieces = [ReelRequest(file_chunk=data[i : i + 256 * 1024]) for i in range(0, len(data), 256 * 1024)]
    return reel(ReelRequest(options=opts), *pieces)


def _reeled(answer: list[Any]) -> bool:
    """The sections once, then a whole PNG for each of them, in order."""
    sections = [r.sections for r in answer if r.WhichOneof("item") == "sections"]
    last = [r.image for r in answer if r.WhichOneof("item") == "image" and r.image.last]
    return len(sections) == 1 and [i.index for i in last] == list(range(len(sections[0].spans))) and bool(last)


def _silence(seconds: float, rate: int = 8000) -> np.ndarray:
    return np.zeros((1, int(seconds * rate)), np.float32)


def _flac_without_length(flac: bytes) -> bytes:
    """The FLAC with STREAMINFO's total-samples field (the low 36 bits of the 8 bytes at 18) zeroed:
    "unknown", so only decoding can tell how long the song is."""
    (packed,) = struct.unpack(">Q", flac[18:26])
    return flac[:18] + struct.pack(">Q", packed & ~((1 << 36) - 1)) + flac[26:]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    return buf.getvalue()


def _flipped(data: bytes, start: int) -> bytes:
    """Every byte from ``start`` inverted: the header intact, the coded audio garbage."""
    return data[:start] + bytes(b ^ 0xFF for b in data[start:])


def _joined_mp3(first: tuple[int, int], second: tuple[int, int]) -> bytes:
    """Two MP3 songs (rate, channels) back to back, the second's ID3 tag left out: one stream whose
    format changes mid-way."""
    tail = encode_song("mp3", *second, seconds=0.5)
    tag = 10 + (tail[6] << 21 | tail[7] << 14 | tail[8] << 7 | tail[9])  # ID3v2: 10-byte header, syncsafe size
    return encode_song("mp3", *first, seconds=0.5) + tail[tag:]


def _bad_tag(flac: bytes) -> bytes:
    """The FLAC with its first Vorbis comment's first byte made invalid UTF-8 (0xE5 then ASCII)."""
    at = flac.index(b"encoder=")
    return flac[:at] + b"\xe5" + flac[at + 1 :]


def _painted(answer: list[Any]) -> bool:
    results = [r.result for r in answer if r.WhichOneof("item") == "result"]
    return bool(results) and results[-1].last and b"".join(r.png for r in results).startswith(b"\x89PNG")


SHORT_WAV = encode_song("wav", 8000, 1, seconds=0.5)
# Ten minutes of silence compress to ~110 KB of FLAC: the zip-bomb of audio.
LONG_SILENT_FLAC = encode_samples("flac", _silence(600), 8000)
ODD_LYRICS = (
    "\u05e9\u05dc\u05d5\u05dd \u202eolleh\u202c\n"  # Hebrew, then a right-to-left override
    "zero\u200bwidth\ufeff \U0001f3b8\U0001f469\u200d\U0001f3a4\nNUL\x00end"
)

ORCHESTRATOR = [
    Case("orchestrator/no messages", "orchestrator", job(), INVALID, "options"),
    Case("orchestrator/file bytes before options", "orchestrator",
         job(Request(file_chunk=SHORT_WAV), Request(options=Options())), INVALID, "options"),
    Case("orchestrator/options sent twice", "orchestrator",
         job(Request(options=Options()), Request(options=Options()), Request(file_chunk=SHORT_WAV)), INVALID,
         "requests[1]"),
    Case("orchestrator/empty file", "orchestrator", upload(b""), INVALID, "file"),
    Case("orchestrator/text instead of audio", "orchestrator", upload(b"la la la\n" * 100), INVALID, "file"),
    Case("orchestrator/PNG instead of audio", "orchestrator", upload(_png()), INVALID, "file"),
    Case("orchestrator/WAV header then inverted bytes", "orchestrator", upload(_flipped(SHORT_WAV, 44)[:2000]),
         INVALID, "file"),
    Case("orchestrator/truncated FLAC", "orchestrator",
         upload(encode_song("flac", 8000, 1, seconds=4.0)[:3000]), INVALID, "file"),
    Case("orchestrator/upload over max_upload_bytes", "orchestrator", upload(bytes(MAX_UPLOAD + 1)), EXHAUSTED,
         "file"),
    Case("orchestrator/song over max_seconds", "orchestrator", upload(encode_song("wav", 8000, 1, seconds=9.0)),
         EXHAUSTED, "file"),
    Case("orchestrator/zip-bomb FLAC: 10 min of silence in 110 KB", "orchestrator", upload(LONG_SILENT_FLAC),
         EXHAUSTED, "file"),
    Case("orchestrator/zip-bomb FLAC with its length erased", "orchestrator",
         upload(_flac_without_length(LONG_SILENT_FLAC)), EXHAUSTED, "file"),
    Case("orchestrator/zip-bomb MP3: 10 min of silence", "orchestrator",
         upload(encode_samples("mp3", _silence(600), 8000)), EXHAUSTED, "file"),
    # These three crashed the decoder (ValueError from PyAV's resampler: INTERNAL) before decode.py checked
    # every frame's format against the first one.
    Case("orchestrator/MP3 turning from mono to stereo mid-stream", "orchestrator",
         upload(_joined_mp3((8000, 1), (8000, 2))), INVALID, "file"),
    Case("orchestrator/MP3 turning from stereo to mono mid-stream", "orchestrator",
         upload(_joined_mp3((8000, 2), (8000, 1))), INVALID, "file"),
    Case("orchestrator/MP3 changing its sample rate mid-stream", "orchestrator",
         upload(_joined_mp3((16000, 1), (8000, 1))), INVALID, "file"),
    # Crashed the decoder (UnicodeDecodeError from PyAV reading tags: INTERNAL) before decode.py opened files
    # with metadata_errors="replace"; the audio is fine, so the song makes an image.
    Case("orchestrator/FLAC whose tags are not UTF-8 makes an image", "orchestrator",
         upload(_bad_tag(encode_song("flac", 8000, 1, seconds=0.5))), OK, check=_painted),
    Case("orchestrator/steps negative", "orchestrator", upload(SHORT_WAV, steps=-1), INVALID, "options.steps"),
    Case("orchestrator/steps over the limit", "orchestrator", upload(SHORT_WAV, steps=151), INVALID,
         "options.steps"),
    Case("orchestrator/width zero is the default, height negative", "orchestrator",
         upload(SHORT_WAV, width=0, height=-64), INVALID, "options.height"),
    Case("orchestrator/width not a multiple of 8", "orchestrator", upload(SHORT_WAV, width=100), INVALID,
         "options.width"),
    Case("orchestrator/guidance NaN", "orchestrator", upload(SHORT_WAV, guidance=float("nan")), INVALID,
         "options.guidance"),
    Case("orchestrator/strength +Inf", "orchestrator", upload(SHORT_WAV, strength=float("inf")), INVALID,
         "options.strength"),
    Case("orchestrator/unknown scheduler", "orchestrator", upload(SHORT_WAV, scheduler="teleport"), INVALID,
         "options.scheduler"),
    Case("orchestrator/unknown lyrics window", "orchestrator", upload(SHORT_WAV, lyrics_window="bridge"), INVALID,
         "options.lyrics_window"),
    Case("orchestrator/oversized lyrics", "orchestrator", upload(SHORT_WAV, lyrics="\U0001f3b5" * 100_001),
         INVALID, "options.lyrics"),
    Case("orchestrator/oversized negative prompt", "orchestrator", upload(SHORT_WAV, negative_prompt="n" * 10_001),
         INVALID, "options.negative_prompt"),
    Case("orchestrator/oversized filename", "orchestrator", upload(SHORT_WAV, filename="a" * 513 + ".wav"),
         INVALID, "options.filename"),
    Case("orchestrator/odd unicode lyrics and filename make an image", "orchestrator",
         upload(SHORT_WAV, lyrics=ODD_LYRICS, negative_prompt="\u200b\x00", filename="\u202esong\x00.wav"), OK,
         check=_painted),
    Case("orchestrator/reel: no messages", "orchestrator", reel(), INVALID, "options"),
    Case("orchestrator/reel: file bytes before options", "orchestrator", reel(ReelRequest(file_chunk=SHORT_WAV)),
         INVALID, "CreateReelRequest"),
    Case("orchestrator/reel: one section asked for", "orchestrator", reel_upload(SHORT_WAV, sections=1), INVALID,
         "options.sections"),
    Case("orchestrator/reel: more sections than the limit", "orchestrator", reel_upload(SHORT_WAV, max_sections=17),
         INVALID, "options.max_sections"),
    Case("orchestrator/reel: a negative shortest section", "orchestrator",
         reel_upload(SHORT_WAV, min_section_seconds=-8), INVALID, "options.min_section_seconds"),
    Case("orchestrator/reel: a span on its image", "orchestrator",
         reel_upload(SHORT_WAV, image={"span": orchestrator_pb2.Span(start_s=0, end_s=1)}), INVALID,
         "options.image.span"),
    Case("orchestrator/reel: image options over the generator's limits", "orchestrator",
         reel_upload(SHORT_WAV, image={"steps": 151}), INVALID, "options.steps"),
    Case("orchestrator/reel: three sections of 8 s in half a second", "orchestrator",
         reel_upload(SHORT_WAV, sections=3), INVALID, "options.sections"),
    Case("orchestrator/reel: text instead of audio", "orchestrator", reel_upload(b"la la la\n" * 100), INVALID,
         "file"),
    Case("orchestrator/reel: song over max_seconds", "orchestrator",
         reel_upload(encode_song("wav", 8000, 1, seconds=9.0)), EXHAUSTED, "file"),
    Case("orchestrator/reel of half a second is one section, painted", "orchestrator", reel_upload(SHORT_WAV), OK,
         check=_reeled),
]
