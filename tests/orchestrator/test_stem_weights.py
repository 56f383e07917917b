"""The listener's emphasis (DESIGN.md §2 step 1b): stem weights scale each stem's part of the centred audio
vector before the projection; all weights 1 leave the fused tensor as it was, bit for bit. Also the options
that carry them and the lyrics given with their times (``timed_lyrics``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiomemory.defaults import MAX_STEM_WEIGHT, STEMS
from audiomemory.orchestrator.fusion import (
    STEM_ORDER,
    Fusion,
    Projection,
    ReferenceStats,
    audio_direction,
    centre,
    fuse,
    weigh_stems,
)
from audiomemory.orchestrator.options import MAX_TIMED_LINES, parse_options, resolved_request
from audiomemory.runtime.errors import InvalidInput
from audiomemory.v1 import orchestrator_pb2, transcriber_pb2

D = 32
N = 64  # 4 stems x (mean, std) x 8
seeds = st.integers(min_value=0, max_value=2**32 - 1)
weights = st.floats(min_value=0.0, max_value=MAX_STEM_WEIGHT, allow_nan=False)


def _embeddings(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 7, D)).astype(np.float32) * 3


def _audio(seed: int) -> np.ndarray:
    return np.abs(np.random.default_rng(seed + 1).standard_normal(N)).astype(np.float32)


def test_the_client_and_the_orchestrator_name_the_stems_alike() -> None:
    assert STEMS == STEM_ORDER


@settings(max_examples=20, deadline=None)
@given(seed=seeds, alpha=st.floats(min_value=0.01, max_value=1.0), with_stats=st.booleans())
def test_all_weights_one_leave_the_fused_tensor_bit_identical(seed: int, alpha: float, with_stats: bool) -> None:
    e, a = _embeddings(seed), _audio(seed)
    rng = np.random.default_rng(seed)
    stats = ReferenceStats(rng.uniform(0, 1, N), rng.uniform(0.1, 2, N), "test") if with_stats else None
    plain = Fusion(stats=stats).apply(e, a, alpha, projection_seed=2, keep_bos=False)
    ones = Fusion(stats=stats).apply(e, a, alpha, projection_seed=2, keep_bos=False, stem_weights=(1.0,) * 4)
    assert np.array_equal(ones.embeddings, plain.embeddings) and ones.embeddings.dtype == plain.embeddings.dtype
    assert np.array_equal(fuse(e, a, alpha, stats=stats, stem_weights=None), fuse(e, a, alpha, stats=stats))


@settings(max_examples=20, deadline=None)
@given(seed=seeds, stem=st.integers(0, 3), weight=weights.filter(lambda w: abs(w - 1.0) > 1e-3))
def test_a_weight_other_than_one_changes_the_direction(seed: int, stem: int, weight: float) -> None:
    a, p = _audio(seed), Projection.from_seed(D, 0, N)
    chosen = [1.0] * 4
    chosen[stem] = weight
    plain, weighted = audio_direction(a, p), audio_direction(a, p, stem_weights=chosen)
    assert plain is not None and weighted is not None
    assert not np.allclose(plain, weighted)
    e = _embeddings(seed)
    assert not np.array_equal(fuse(e, a, 0.5, projection=p, stem_weights=chosen), fuse(e, a, 0.5, projection=p))


@settings(max_examples=20, deadline=None)
@given(seed=seeds, chosen=st.lists(weights, min_size=4, max_size=4))
def test_each_stems_part_of_the_centred_vector_is_scaled_by_its_weight(seed: int, chosen: list[float]) -> None:
    a_c = centre(_audio(seed))
    a_w = weigh_stems(a_c, chosen)
    part = N // 4  # a stem's mean and std, in STEM_ORDER
    for s, w in enumerate(chosen):
        assert np.array_equal(a_w[s * part:(s + 1) * part], a_c[s * part:(s + 1) * part] * w)
    # û is the projection of exactly that vector (step 2 reads a_w)
    p = Projection.from_seed(D, 1, N)
    u_hat = audio_direction(_audio(seed), p, stem_weights=chosen)
    u = p.weight @ a_w
    if np.linalg.norm(u) >= 1e-8:
        assert u_hat is not None
        np.testing.assert_allclose(u_hat, u / np.linalg.norm(u), rtol=1e-12, atol=1e-12)


def test_weights_that_are_all_zero_leave_the_embeddings_as_encoded() -> None:
    e, a = _embeddings(3), _audio(3)
    fused = Fusion().apply(e, a, 0.8, projection_seed=0, keep_bos=False, stem_weights=(0.0,) * 4)
    assert not fused.steered and fused.embeddings.tobytes() == e.tobytes()


def _options(**fields: Any) -> orchestrator_pb2.CreateImageOptions:
    return orchestrator_pb2.CreateImageOptions(**fields)


def test_stem_weights_are_resolved_one_per_stem_and_recorded_as_they_ran() -> None:
    sent = _options(stem_weights={"drums": 0.5, "vocals": 1.5})
    opts = parse_options(sent, Fusion(), 20_000)
    assert opts.stem_weights == (1.5, 0.5, 1.0, 1.0)
    assert dict(resolved_request(sent, opts).stem_weights) == {"vocals": 1.5, "drums": 0.5, "bass": 1.0,
                                                               "other": 1.0}
    ones = _options(stem_weights={"bass": 1.0})
    assert parse_options(ones, Fusion(), 20_000).stem_weights is None  # all 1: the unweighted fusion
    assert dict(resolved_request(ones, parse_options(ones, Fusion(), 20_000)).stem_weights) == {
        stem: 1.0 for stem in STEMS}
    assert not resolved_request(_options(), parse_options(_options(), Fusion(), 20_000)).stem_weights


@pytest.mark.parametrize(("weights", "words"), [
    ({"drums": 4.5}, "options.stem_weights[drums]: must be in [0, 4], got 4.5"),
    ({"bass": -0.25}, "options.stem_weights[bass]: must be in [0, 4], got -0.25"),
    ({"other": math.nan}, "options.stem_weights[other]: must be in [0, 4], got nan"),
    ({"vocals": math.inf}, "options.stem_weights[vocals]: must be in [0, 4], got inf"),
    ({"guitar": 1.0}, "options.stem_weights: keys are the stems ['vocals', 'drums', 'bass', 'other'], got 'guitar'"),
])
def test_bad_stem_weights_are_invalid_argument_naming_the_stem_the_limit_and_the_value(
    weights: dict[str, float], words: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_options(_options(stem_weights=weights), Fusion(), 20_000)
    assert str(info.value) == words


def _segments(*lines: tuple[float, float, str]) -> list[transcriber_pb2.TranscriptSegment]:
    return [transcriber_pb2.TranscriptSegment(start=s, end=e, text=t) for s, e, t in lines]


def test_timed_lyrics_are_the_lyrics_of_the_whole_song_one_line_each() -> None:
    timed = _segments((0.0, 2.5, "Hold me now"), (2.5, 4.0, "Under the lights"), (4.0, 0.0, "Hold me now"))
    opts = parse_options(_options(timed_lyrics=timed), Fusion(), 20_000)
    plain = parse_options(_options(lyrics="Hold me now\nUnder the lights\nHold me now"), Fusion(), 20_000)
    assert opts.lyrics == plain.lyrics and opts.source == plain.source == "given"


@pytest.mark.parametrize(("fields", "words"), [
    ({"lyrics": "la la", "timed_lyrics": _segments((0, 1, "la"))}, "options.lyrics: must be empty when timed_lyrics"),
    ({"timed_lyrics": _segments((0, 1, "la")), "lyrics_source": orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE},
     "options.timed_lyrics: must be empty when lyrics_source is transcribe, got 1 lines"),
    ({"timed_lyrics": _segments(*((i, i + 1, "") for i in range(MAX_TIMED_LINES + 1)))},
     f"options.timed_lyrics: at most {MAX_TIMED_LINES} lines, got {MAX_TIMED_LINES + 1}"),
    ({"timed_lyrics": _segments((0, 1, "la" * 60), (1, 2, "la" * 60))},
     "options.timed_lyrics: their text, a line each, at most 200 characters (the orchestrator's "
     "max_lyrics_chars), got 241"),
])
def test_bad_timed_lyrics_are_invalid_argument_naming_the_field(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_options(_options(**fields), Fusion(), 200)
    assert words in str(info.value)
