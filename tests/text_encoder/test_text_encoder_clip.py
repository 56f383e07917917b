"""The clip backend on the tiny profile: real CLIP tokenization, shapes, truncation, odd text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audiomemory.runtime.errors import InvalidInput, ModelUnavailable
from audiomemory.runtime.registry import load_backend
from audiomemory.text_encoder.backends.clip import ClipBackend, clip_bpe
from audiomemory.text_encoder.config import TextEncoderConfig

BOS, EOS = 49406, 49407


def test_clip_backend_is_registered_under_its_entry_point() -> None:
    assert load_backend("text_encoder", "clip") is ClipBackend


def test_bpe_vocabulary_is_clips_49408_tokens() -> None:
    vocab, merges = clip_bpe()
    assert len(vocab) == 49408
    assert len(merges) == 49152 - 256 - 2
    assert vocab["<|startoftext|>"] == BOS and vocab["<|endoftext|>"] == EOS
    assert vocab["cat</w>"] == 2368


def test_tokenizer_gives_clips_ids_padded_with_eos_to_77(clip_backend: ClipBackend) -> None:
    encoded = clip_backend.encode(["a photo of a cat"])
    ids = encoded.token_ids[0].tolist()
    assert len(ids) == 77
    assert ids[:7] == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert ids[7:] == [EOS] * 70  # SD 1.5's tokenizer pads with <|endoftext|>
    assert encoded.token_ids.dtype == np.int64


def test_encode_returns_last_hidden_state_for_the_whole_batch(clip_backend: ClipBackend) -> None:
    texts = ["a photo of a cat", "", "neon rain on the river"]
    encoded = clip_backend.encode(texts)
    assert encoded.embeddings.shape == (3, 77, clip_backend.hidden_size)
    assert encoded.embeddings.dtype == np.float32
    assert encoded.truncated == [False, False, False]
    # Same as the model's own last_hidden_state on the same ids, with no attention mask (as SD does).
    model = clip_backend._loaded()[0]
    with torch.inference_mode():
        expected = model(torch.from_numpy(encoded.token_ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(encoded.embeddings, expected, rtol=0, atol=1e-6)
    # Different texts, different embeddings (the model is not ignoring its input).
    assert not np.allclose(encoded.embeddings[0], encoded.embeddings[2])


def test_empty_text_is_bos_then_eos_padding(clip_backend: ClipBackend) -> None:
    encoded = clip_backend.encode([""])
    assert encoded.token_ids[0].tolist() == [BOS] + [EOS] * 76
    assert encoded.truncated == [False]


def test_long_text_is_truncated_to_77_ending_in_eos_and_flagged(clip_backend: ClipBackend) -> None:
    encoded = clip_backend.encode(["la " * 200, "la " * 75, "la " * 76])
    # 75 words + BOS + EOS = 77 fits exactly; 76 words do not.
    assert encoded.truncated == [True, False, True]
    assert encoded.token_ids[0, -1] == EOS and encoded.token_ids.shape == (3, 77)


@pytest.mark.parametrize(
    "text",
    [
        "héllo wörld ñandú",
        "🎵🎸🔥" * 40,
        "שלום עולם مرحبا بالعالم",  # RTL scripts
        "\u202e\u200f\u200b reversed and zero-width",  # bidi and zero-width controls
        "\x00\x01\x07\x1b[31m\r\n\t",  # C0 control characters and an ANSI escape
        "\ud800 lone surrogate",  # impossible in UTF-8, possible in a Python str
        "漢字かなカナ한국어",
        "\U0010ffff\ufffd",
    ],
)
def test_odd_unicode_never_crashes(clip_backend: ClipBackend, text: str) -> None:
    encoded = clip_backend.encode([text])
    assert encoded.token_ids.shape == (1, 77)
    assert encoded.token_ids[0, 0] == BOS
    assert EOS in encoded.token_ids[0].tolist()
    assert np.isfinite(encoded.embeddings).all()


def test_encode_without_texts_is_invalid(clip_backend: ClipBackend) -> None:
    with pytest.raises(InvalidInput, match="at least one text"):
        clip_backend.encode([])


def test_describe_reports_the_loaded_model(clip_backend: ClipBackend, tiny_clip: dict[str, Any]) -> None:
    info = clip_backend.describe()
    assert info.backend == "clip" and info.model_id == tiny_clip["model"]
    assert info.device == "cpu" and info.dtype == "float32"
    assert info.revision.startswith("sha256:")
    assert info.extra["hidden_size"] == "32" and info.extra["max_length"] == "77"
    assert info.extra["vocab_size"] == "49408"


def test_tiny_profile_is_a_save_pretrained_folder_in_sd_layout(tiny_clip: dict[str, Any]) -> None:
    folder = Path(tiny_clip["model"])
    assert (folder / "text_encoder" / "config.json").is_file()
    assert (folder / "text_encoder" / "model.safetensors").is_file()
    # The files SD 1.5 ships for its tokenizer, built from the open_clip BPE.
    assert (folder / "tokenizer" / "vocab.json").is_file() and (folder / "tokenizer" / "merges.txt").is_file()


def test_tiny_profile_is_reproducible(tmp_path: Path, clip_backend: ClipBackend) -> None:
    again = ClipBackend(TextEncoderConfig(**ClipBackend.write_tiny(tmp_path), device="cpu"))
    again.load()
    assert again.describe().revision == clip_backend.describe().revision


def test_missing_hub_model_offline_names_the_model_and_the_ways_out() -> None:
    backend = ClipBackend(TextEncoderConfig(model="audiomemory-tests/no-such-model", device="cpu"))
    with pytest.raises(ModelUnavailable) as caught:
        backend.load()
    message = str(caught.value)
    assert "audiomemory-tests/no-such-model" in message
    assert "models pull" in message and "AUDIOMEMORY_TEXT_ENCODER_MODEL" in message
