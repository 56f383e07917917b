"""The result image's metadata: PNG text chunks that say how to make the image again.

``build_metadata(...)`` assembles the record of one job (schema ``SCHEMA_VERSION``): the song, the lyrics
window, the fusion, the generation as it ran, the model profile and every service's ``Describe``.

``embed_metadata(png, metadata)`` re-saves the generator's PNG with Pillow, adding two text chunks
and leaving the pixels as they were (PNG is lossless and the mode is kept):

- ``parameters`` — the A1111 convention many image tools read: prompt, ``Negative prompt:``, then
  ``Steps: …, Sampler: …, CFG scale: …, Seed: …, Size: WxH, Model: …`` plus our fields.
- ``audiomemory`` — JSON with everything needed to reproduce the image (``METADATA_KEY``).

``audiomemory.client.read_metadata(png)`` (in the core, so clients read it without the orchestrator)
returns the JSON back (``None`` when the image has none). A record over ``client.MAX_RECORD_BYTES`` (what
Pillow reads back) is never written; the job's text limits keep every record far below it.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf import json_format
from PIL import Image, PngImagePlugin

from audiomemory.client import MAX_RECORD_BYTES, METADATA_KEY
from audiomemory.orchestrator.pooling import STEM_ORDER
from audiomemory.runtime.errors import AudioMemoryError

if TYPE_CHECKING:
    from audiomemory.orchestrator.compatibility import Infos
    from audiomemory.orchestrator.decode import DecodedAudio
    from audiomemory.orchestrator.downstream import Painted, StemFormat
    from audiomemory.orchestrator.front import AudioVector
    from audiomemory.orchestrator.fusion import Fused, Fusion
    from audiomemory.orchestrator.options import JobOptions
    from audiomemory.v1 import common_pb2

PARAMETERS_KEY = "parameters"
SCHEMA_VERSION = 1


def a1111_parameters(metadata: dict[str, Any]) -> str:
    """The A1111-style ``parameters`` text for ``metadata`` (see ``build_metadata``)."""
    gen = metadata["generation"]
    fusion = metadata["fusion"]
    lyrics = metadata["lyrics"]
    models = metadata["services"]
    fields = [
        ("Steps", gen["steps"]),
        ("Sampler", gen["scheduler"]),
        ("CFG scale", gen["guidance"]),
        ("Seed", gen["seed"]),
        ("Size", f"{gen['width']}x{gen['height']}"),
        ("Model", models["generator"]["model"].get("modelId", "")),
        ("Text encoder", models["text_encoder"]["model"].get("modelId", "")),
        ("Audio strength", fusion["strength"]),
        ("Projection", fusion["projection"]),
        ("Keep BOS", fusion["keep_bos"]),
        ("Lyrics window", lyrics["window"]),
        ("Song hash", metadata["song"]["sha256"]),
    ]
    tail = ", ".join(f"{k}: {_one_line(str(v))}" for k, v in fields)
    return f"{lyrics['text']}\nNegative prompt: {lyrics['negative_prompt']}\n{tail}"


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace(",", ";")


def embed_metadata(png: bytes, metadata: dict[str, Any]) -> bytes:
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
    record = json.dumps(metadata, sort_keys=True, ensure_ascii=False)
    size = len(record.encode())
    if size > MAX_RECORD_BYTES:  # the job's text limits keep it far below; never write what no reader reads
        raise AudioMemoryError(f"the image's record is {size} bytes, over the {MAX_RECORD_BYTES} bytes a reader "
                               "takes back (Pillow's MAX_TEXT_CHUNK)")
    info.add_text(PARAMETERS_KEY, a1111_parameters(metadata))  # iTXt automatically if not Latin-1
    info.add_itxt(METADATA_KEY, record, zip=True)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _as_dict(msg: Any) -> dict[str, Any]:
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)


def build_metadata(
    *, opts: JobOptions, infos: Infos, orchestrator: common_pb2.ModelInfo, profile: str, song: DecodedAudio,
    sha256: str, upload_bytes: int, window: str, truncated: tuple[bool, ...], fusion: Fusion, fused: Fused,
    painted: Painted, denoising_steps: int, audio: AudioVector, stem_format: StemFormat,
    request: dict[str, Any],
) -> dict[str, Any]:
    """Everything needed to make the image again, and what each service was."""
    gen = infos.generator
    services = {
        "orchestrator": {"model": _as_dict(orchestrator)},
        "separator": _as_dict(infos.separator),
        "audio_encoder": _as_dict(infos.audio_encoder),
        "text_encoder": _as_dict(infos.text_encoder),
        "generator": _as_dict(infos.generator),
    }
    if audio.transcript is not None and infos.transcriber is not None:
        services["transcriber"] = _as_dict(infos.transcriber)
    return {
        "schema": SCHEMA_VERSION,
        "song": {
            "sha256": sha256, "filename": opts.filename, "bytes": upload_bytes, "container": song.container,
            "codec": song.codec, "sample_rate": song.source_rate, "channels": song.source_channels,
            "seconds": round(song.seconds, 3),
        },
        "lyrics": {
            "window": opts.window, "text": window, "negative_prompt": opts.negative_prompt,
            "truncated": list(truncated), "full": opts.lyrics,
            "source": "transcribed" if audio.transcript is not None else opts.source,
            "transcript": audio.transcript.to_dict() if audio.transcript is not None else None,
            "transcript_cache_hit": audio.transcript_cache_hit,
        },
        "fusion": {
            "strength": opts.strength, "projection_seed": opts.projection_seed, "projection": fused.projection,
            "keep_bos": opts.keep_bos, "reference_stats": fusion.stats.identity if fusion.stats else None,
            "steered": fused.steered, "stems": list(STEM_ORDER),
            "audio_vector_sha256": hashlib.sha256(np.ascontiguousarray(audio.pooled, np.float32).tobytes()).hexdigest(),
        },
        "generation": {
            "seed": opts.seed, "steps": opts.steps or gen.default_steps, "denoising_steps": denoising_steps,
            "guidance": opts.guidance if opts.guidance is not None else gen.default_guidance,
            "guidance_set": opts.guidance is not None, "width": painted.width, "height": painted.height,
            "scheduler": painted.scheduler, "requested_scheduler": opts.scheduler,
            "requested_width": opts.width, "requested_height": opts.height, "native_size": gen.native_size,
        },
        "cache_hit": audio.cache_hit,
        "stem_format": {"sampleRate": stem_format.sample_rate, "channels": stem_format.channels,
                        "dtype": stem_format.dtype},
        "profile": profile,
        "request": request,
        "services": services,
        "created_unix": int(time.time()),
    }


# --- TEMPORARY (replaced by the typed-record work) ---------------------------------------------------
def build_record(**kw: Any) -> Any:
    from audiomemory.runtime.identity import served as _served
    from audiomemory.v1 import record_pb2
    served = dict(kw.pop("served"))
    orchestrator = kw.pop("orchestrator")
    native = kw.pop("native_size")
    request = kw.pop("request")
    gen = served["generator"]
    rec = record_pb2.ImageRecord(schema=2, profile=kw["profile"], request=request)
    for kind, header in served.items():
        rec.served[kind].CopyFrom(header)
    rec.served["orchestrator"].CopyFrom(_served(orchestrator))
    opts, painted = kw["opts"], kw["painted"]
    g = rec.generation
    g.seed = opts.seed
    g.steps = int(gen.resolved.get("steps", "0") or 0)
    g.denoising_steps = kw["denoising_steps"]
    g.guidance = float(gen.resolved.get("guidance", "0") or 0)
    g.width, g.height, g.scheduler, g.native_size = painted.width, painted.height, painted.scheduler, native
    rec.song.sha256 = kw["sha256"]
    rec.fusion.steered = kw["fused"].steered
    rec.cache_hit = kw["audio"].cache_hit
    return rec


def record_json(record: Any) -> str:
    return json_format.MessageToJson(record, preserving_proto_field_name=True, sort_keys=True)


def embed_record(png: bytes, record: Any) -> bytes:
    return png
