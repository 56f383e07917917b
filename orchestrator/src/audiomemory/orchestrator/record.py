"""The image's record (``record.proto``'s ``ImageRecord``), written into the PNG the generator returned.

``build_record(...)`` assembles the record of one job (schema ``client.SCHEMA``): the song, the lyrics
window, the fusion, the generation as it ran, the model profile, the resolved request and — in ``served`` —
the call header of every replica that served one of the job's calls (``served["generator"]``: the replica
that painted; its steps and guidance are what it resolved), plus the orchestrator's own.

``embed_record(png, record)`` re-saves the generator's PNG with Pillow, adding two text chunks and leaving
the pixels as they were (PNG is lossless and the mode is kept):

- ``parameters`` — the A1111 convention many image tools read: prompt, ``Negative prompt:``, then
  ``Steps: …, Sampler: …, CFG scale: …, Seed: …, Size: WxH, Model: …`` plus our fields.
- ``audiomemory`` — the record's JSON (``client.record_json``, also the streamed ``metadata_json``).

``audiomemory.client.read_record(png)`` (in the core, so clients read it without the orchestrator) reads it
back. A record over ``client.MAX_RECORD_BYTES`` (what Pillow reads back) is never written; the job's text
limits keep every record far below it.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, PngImagePlugin

from audiomemory.client import MAX_RECORD_BYTES, METADATA_KEY, PARAMETERS_KEY, SCHEMA, record_json
from audiomemory.orchestrator.pooling import STEM_ORDER
from audiomemory.runtime import identity
from audiomemory.runtime.errors import AudioMemoryError
from audiomemory.v1 import common_pb2, orchestrator_pb2, record_pb2, transcriber_pb2

if TYPE_CHECKING:
    from audiomemory.orchestrator.decode import DecodedAudio
    from audiomemory.orchestrator.downstream import Painted, StemFormat
    from audiomemory.orchestrator.front import AudioVector
    from audiomemory.orchestrator.fusion import Fused, Fusion
    from audiomemory.orchestrator.options import JobOptions
    from audiomemory.runtime.transcript import Transcript


def a1111_parameters(record: record_pb2.ImageRecord) -> str:
    """The A1111-style ``parameters`` text for ``record``."""
    gen, fusion, lyrics = record.generation, record.fusion, record.lyrics
    fields = [
        ("Steps", gen.steps),
        ("Sampler", gen.scheduler),
        ("CFG scale", gen.guidance),
        ("Seed", gen.seed),
        ("Size", f"{gen.width}x{gen.height}"),
        ("Model", _model_id(record, "generator")),
        ("Text encoder", _model_id(record, "text_encoder")),
        ("Audio strength", fusion.strength),
        ("Projection", fusion.projection),
        ("Keep BOS", fusion.keep_bos),
        ("Lyrics window", lyrics.window),
        ("Song hash", record.song.sha256),
    ]
    weights = record.request.stem_weights
    if weights:  # the listener's emphasis, when one was asked for
        fields.insert(8, ("Stem weights", " ".join(f"{stem}={weights.get(stem, 1.0):g}" for stem in STEM_ORDER)))
    tail = ", ".join(f"{k}: {_one_line(str(v))}" for k, v in fields)
    return f"{lyrics.text}\nNegative prompt: {lyrics.negative_prompt}\n{tail}"


def _model_id(record: record_pb2.ImageRecord, kind: str) -> str:
    return record.served[kind].model.model_id if kind in record.served else ""


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace(",", ";")


def embed_record(png: bytes, record: record_pb2.ImageRecord) -> bytes:
    """``png`` with the ``parameters`` and ``audiomemory`` text chunks added; pixels unchanged."""
    try:
        image = Image.open(io.BytesIO(png))
        image.load()
    except (OSError, ValueError) as exc:
        raise AudioMemoryError(f"the generator returned an image Pillow cannot read: {exc}") from None
    if image.format != "PNG":
        raise AudioMemoryError(f"the generator returned a {image.format} image, expected PNG")
    info = PngImagePlugin.PngInfo()
    for key, value in getattr(image, "text", {}).items():
        if key not in (METADATA_KEY, PARAMETERS_KEY):
            info.add_text(key, value)  # keep what the generator wrote
    text = record_json(record)
    size = len(text.encode())
    if size > MAX_RECORD_BYTES:  # the job's text limits keep it far below; never write what no reader reads
        raise AudioMemoryError(f"the image's record is {size} bytes, over the {MAX_RECORD_BYTES} bytes a reader "
                               "takes back (Pillow's MAX_TEXT_CHUNK)")
    info.add_text(PARAMETERS_KEY, a1111_parameters(record))  # iTXt automatically if not Latin-1
    info.add_itxt(METADATA_KEY, text, zip=True)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def build_record(
    *, opts: JobOptions, served: Mapping[str, common_pb2.Served], orchestrator: common_pb2.ModelInfo, profile: str,
    song: DecodedAudio, sha256: str, upload_bytes: int, window: str, truncated: tuple[bool, ...], fusion: Fusion,
    fused: Fused, painted: Painted, denoising_steps: int, audio: AudioVector, stem_format: StemFormat,
    request: orchestrator_pb2.CreateImageOptions, native_size: int, pooled: np.ndarray | None = None,
    section: record_pb2.SectionRecord | None = None,
) -> record_pb2.ImageRecord:
    """Everything needed to make the image again, and the replica that served each of the job's calls
    (``served``: kind → its call header; ``served["generator"]`` the replica that painted). ``pooled`` is the
    audio vector the fusion read (a span's; default the whole song's), ``section`` the image's place in a reel
    or, for a span painted alone, where its words came from."""
    painter = served["generator"].resolved
    transcript = audio.transcript
    record = record_pb2.ImageRecord(
        schema=SCHEMA, cache_hit=audio.cache_hit, profile=profile, request=request, created_unix=int(time.time()),
        song=record_pb2.SongRecord(
            sha256=sha256, filename=opts.filename, bytes=upload_bytes, container=song.container, codec=song.codec,
            sample_rate=song.source_rate, channels=song.source_channels, seconds=round(song.seconds, 3)),
        lyrics=record_pb2.LyricsRecord(
            window=opts.window, text=window, negative_prompt=opts.negative_prompt, truncated=truncated,
            full=opts.lyrics, source="transcribed" if transcript is not None else opts.source,
            transcript=None if transcript is None else _transcript(transcript),
            transcript_cache_hit=audio.transcript_cache_hit),
        fusion=record_pb2.FusionRecord(
            strength=opts.strength, projection_seed=opts.projection_seed, projection=fused.projection,
            keep_bos=opts.keep_bos, reference_stats=fusion.stats.identity if fusion.stats else "",
            steered=fused.steered, stems=STEM_ORDER,
            audio_vector_sha256=hashlib.sha256(np.ascontiguousarray(
                audio.pooled if pooled is None else pooled, np.float32).tobytes()).hexdigest()),
        generation=record_pb2.GenerationRecord(
            seed=opts.seed, steps=int(painter.get("steps", opts.steps)), denoising_steps=denoising_steps,
            guidance=float(painter.get("guidance", opts.guidance or 0.0)), guidance_set=opts.guidance is not None,
            width=painted.width, height=painted.height, scheduler=painted.scheduler,
            requested_scheduler=opts.scheduler, requested_width=opts.width, requested_height=opts.height,
            native_size=native_size),
        stem_format=record_pb2.StemFormatRecord(
            sample_rate=stem_format.sample_rate, channels=stem_format.channels, dtype=stem_format.dtype),
        section=section,
    )
    for kind, header in served.items():
        record.served[kind].CopyFrom(header)
    record.served["orchestrator"].CopyFrom(identity.served(orchestrator))
    return record


def _transcript(transcript: Transcript) -> transcriber_pb2.Transcript:
    """As ``Transcript.to_dict`` rounds it: times to the millisecond."""
    return transcriber_pb2.Transcript(
        text=transcript.text, language=transcript.language, seconds=round(transcript.seconds, 3),
        segments=[transcriber_pb2.TranscriptSegment(start=round(s.start, 3), end=round(s.end, 3), text=s.text)
                  for s in transcript.segments])
