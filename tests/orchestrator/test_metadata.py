"""The PNG keeps its pixels and gains the A1111 ``parameters`` and the JSON ``audiomemory`` chunks."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from audiomemory.client import read_metadata
from audiomemory.orchestrator.metadata import embed_metadata


def _metadata() -> dict[str, Any]:
    return {
        "song": {"sha256": "ab" * 32},
        "lyrics": {"window": "salient", "text": "Hold me now, Ünder the lights", "negative_prompt": "blurry"},
        "fusion": {"strength": 0.1, "projection": "seed:0", "keep_bos": False},
        "generation": {"seed": 7, "steps": 30, "guidance": 7.5, "guidance_set": True, "width": 64,
                       "height": 48, "scheduler": "pndm"},
        "services": {"generator": {"model": {"modelId": "sd-tiny"}}, "text_encoder": {"model": {"modelId": "clip"}}},
    }


def test_metadata_chunks_are_added_and_pixels_unchanged() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    out = embed_metadata(buf.getvalue(), _metadata())
    image = Image.open(io.BytesIO(out))
    np.testing.assert_array_equal(np.asarray(image), pixels)
    assert read_metadata(out) == _metadata()
    params = image.text["parameters"]  # type: ignore[attr-defined]
    assert params.splitlines()[0] == "Hold me now, Ünder the lights"
    assert params.splitlines()[1] == "Negative prompt: blurry"
    assert params.splitlines()[2].startswith("Steps: 30, Sampler: pndm, CFG scale: 7.5, Seed: 7, Size: 64x48")
