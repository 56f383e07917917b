"""The result image's metadata: PNG text chunks that say how to make the image again.

``embed_metadata(png, metadata)`` re-saves the generator's PNG with Pillow, adding two text chunks
and leaving the pixels as they were (PNG is lossless and the mode is kept):

- ``parameters`` — the A1111 convention many image tools read: prompt, ``Negative prompt:``, then
  ``Steps: …, Sampler: …, CFG scale: …, Seed: …, Size: WxH, Model: …`` plus our fields.
- ``audiomemory`` — JSON with everything needed to reproduce the image (``METADATA_KEY``).

``audiomemory.client.read_metadata(png)`` (in the core, so clients read it without the orchestrator)
returns the JSON back (``None`` when the image has none).
"""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image, PngImagePlugin

from audiomemory.client import METADATA_KEY
from audiomemory.runtime.errors import AudioMemoryError

PARAMETERS_KEY = "parameters"
SCHEMA_VERSION = 1


def a1111_parameters(metadata: dict[str, Any]) -> str:
    """The A1111-style ``parameters`` text for ``metadata`` (see ``servicer._metadata``)."""
    gen = metadata["generation"]
    fusion = metadata["fusion"]
    lyrics = metadata["lyrics"]
    models = metadata["services"]
    fields = [
        ("Steps", gen["steps"]),
        ("Sampler", gen["scheduler"]),
        ("CFG scale", gen["guidance"] if gen["guidance_set"] else "default"),
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
    info.add_text(PARAMETERS_KEY, a1111_parameters(metadata))  # iTXt automatically if not Latin-1
    info.add_itxt(METADATA_KEY, json.dumps(metadata, sort_keys=True, ensure_ascii=False), zip=True)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()
