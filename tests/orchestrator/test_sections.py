"""A song's sections from its one-second bins: the change points of its per-second features, on whole seconds."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from audiomemory.bench.inprocess import InProcessPipeline
from audiomemory.orchestrator.job import Job
from audiomemory.orchestrator.pipeline import Upload
from audiomemory.orchestrator.sections import MAX_SECTIONS, SectionAsk, find_sections, section_ask
from audiomemory.orchestrator.timebins import Bins
from audiomemory.runtime.errors import InvalidInput
from audiomemory.runtime.service import RunningService
from audiomemory.stack import definition
from audiomemory.v1 import orchestrator_pb2

from .songs import encode_samples

RATE = 22_050
PARTS = (25, 20, 25)  # seconds: noise bursts, a sustained chord, a low tone (issue 22: >= 60 s in all)
HOP = 2.0  # seconds between the audio encoder's frames in the three-part test


class _NoRoom:
    def resize(self, weight: int) -> None:
        pass


def _bins(levels: list[tuple[int, float]], dim: int = 6, noise: float = 0.1, seed: int = 0) -> Bins:
    """Bins whose per-second means are ``level`` (a different direction per part) plus noise, one frame each."""
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((len(levels), dim))
    rows = np.concatenate([np.tile(directions[i] * level, (length, 1)) for i, (length, level) in enumerate(levels)])
    rows = rows + noise * rng.standard_normal(rows.shape)
    sums = np.stack([rows + stem for stem in range(4)]).astype(np.float32)
    return Bins(np.ones(sums.shape[:2], np.int32), sums, np.zeros_like(sums))


def test_parts_of_a_song_are_found_on_their_seconds_and_the_count_chosen_from_the_song() -> None:
    bins = _bins([(30, 1.0), (17, 1.0), (40, 1.0), (21, 1.0)])
    assert find_sections(bins) == [(0, 30), (30, 47), (47, 87), (87, 108)]
    assert find_sections(bins, SectionAsk(count=4)) == [(0, 30), (30, 47), (47, 87), (87, 108)]
    cut = find_sections(bins, SectionAsk(count=6))  # more than it has: every section at least min_seconds
    assert len(cut) == 6 and cut[0][0] == 0 and cut[-1][1] == 108
    assert all(end - start >= 8 and start == before for (start, end), (_, before) in zip(cut[1:], cut, strict=False))
    assert find_sections(bins, SectionAsk(max_sections=2)) in ([(0, 47), (47, 108)], [(0, 30), (30, 108)],
                                                               [(0, 87), (87, 108)])


def test_a_song_without_parts_is_one_section_and_a_short_one_cannot_be_cut_into_many() -> None:
    assert find_sections(_bins([(90, 0.0)], noise=1.0)) == [(0, 90)]  # noise alone: no boundary pays its way
    assert find_sections(_bins([(10, 1.0), (5, 1.0)])) == [(0, 15)]  # shorter than two sections of 8 s
    assert find_sections(_bins([(10, 1.0), (5, 1.0)]), SectionAsk(min_seconds=4)) == [(0, 10), (10, 15)]
    with pytest.raises(InvalidInput) as refused:
        find_sections(_bins([(10, 1.0), (5, 1.0)]), SectionAsk(count=2))
    assert str(refused.value) == ("options.sections: 2 sections of at least 8 s (min_section_seconds) need 16 s; "
                                  "the song has 15 s")


def test_section_settings_are_checked_naming_the_field_the_limit_and_what_came() -> None:
    assert section_ask(0, 0, 0) == SectionAsk(0, 8, 8)
    assert section_ask(5, 4, 12, default_min=6, default_max=10) == SectionAsk(5, 4, 12)
    with pytest.raises(InvalidInput, match=rf"options.max_sections: 2..{MAX_SECTIONS} .*got 17"):
        section_ask(0, 0, 17)
    with pytest.raises(InvalidInput, match=r"options.sections: 0 \(as many as the song has\) or 2..8 .*got 9"):
        section_ask(9, 0, 0)
    with pytest.raises(InvalidInput, match=r"options.sections: .* got 1"):
        section_ask(1, 0, 0)
    with pytest.raises(InvalidInput, match=r"options.min_section_seconds: 1..1200 .*got -3"):
        section_ask(0, -3, 0)


def _three_parts() -> np.ndarray:
    """Noise bursts (a drum-like hit every quarter second), a sustained A-major chord, a low tone: mono float32."""
    rng = np.random.default_rng(7)
    t = np.arange(PARTS[0] * RATE) / RATE
    drums = rng.standard_normal(t.size) * np.exp(-30 * (t % 0.25)) * 0.5
    t = np.arange(PARTS[1] * RATE) / RATE
    chord = sum(0.15 * np.sin(2 * np.pi * f * t) for f in (440.0, 554.37, 659.25, 880.0))
    t = np.arange(PARTS[2] * RATE) / RATE
    bass = 0.4 * np.sin(2 * np.pi * 55 * t) + 0.2 * np.sin(2 * np.pi * 110 * t)
    return np.concatenate([drums, chord, bass])[None].astype(np.float32)


@pytest.fixture(scope="module")
def coarse_encoder(tiny: Callable[[str], dict[str, Any]]) -> Any:
    """The tiny profile's OpenL3 (the real network, random weights) with a frame every 2 s, in int8: the 70-s song's
    four stems are 140 windows of the full-size CNN — at the 0.5 s hop of the shared stack they would be 560."""
    d = definition("audio_encoder")
    config = d.config_class(**tiny("audio_encoder"), hop_seconds=HOP, max_hop_seconds=HOP, hop_growth_seconds=0,
                            precision="int8")
    backend = d.make_backend_class(config.backend)(config)
    backend.load()
    return config, backend


@pytest.mark.long
def test_a_song_of_three_parts_gives_its_two_boundaries_through_the_real_separator_and_encoder(
    models: dict[str, RunningService], coarse_encoder: tuple[Any, Any],
) -> None:
    kinds = ("separator", "text_encoder", "generator")
    backends = {kind: models[kind].backend for kind in kinds}
    configs = {kind: models[kind].config for kind in kinds}
    configs["audio_encoder"], backends["audio_encoder"] = coarse_encoder
    local = InProcessPipeline(**backends, configs=configs)
    data = encode_samples("wav", _three_parts(), RATE)
    sent = orchestrator_pb2.CreateImageOptions(filename="three-parts.wav")
    job = Job(None, stall_seconds=3600.0)
    try:
        opts, infos, _ = local.pipeline.prepare(job, sent)
        upload = Upload(data, hashlib.sha256(data).hexdigest(), _NoRoom())
        listened, _ = local.pipeline.listen(job, opts, infos, lambda: upload, lambda event: None, need_bins=True)
    finally:
        job.cancel_all()
    bins = listened.audio.bins
    assert bins is not None and bins.seconds == sum(PARTS)
    assert bins.counts[0, :4].tolist() == [1, 0, 1, 0]  # a frame centred every 2 s
    np.testing.assert_allclose(bins.pooled(), listened.audio.pooled, rtol=1e-5, atol=1e-6)  # every frame binned
    want = np.cumsum(PARTS)[:-1]  # 25, 45
    for ask in (SectionAsk(count=3), SectionAsk()):
        spans = find_sections(bins, ask)
        assert len(spans) == 3, (ask, spans)
        assert spans[0][0] == 0 and spans[-1][1] == bins.seconds
        found = np.array([end for _, end in spans[:-1]])
        assert np.all(np.abs(found - want) <= 2), (ask, spans)
