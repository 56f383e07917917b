"""What the page shows without a browser: a job's events read by ``progress.JobState`` (the CLI's bars
read them too), and the output folder read back as the gallery."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from audiomemory.bench.hostile_png import GOOD, hostile, png
from audiomemory.client import ImageResult, record_from_json
from audiomemory.progress import JobState
from audiomemory.v1 import orchestrator_pb2 as pb
from audiomemory.web.results import Entry, Results


def test_job_state_says_the_place_in_line_then_the_song_then_the_steps() -> None:
    state = JobState()
    state.update(pb.StageEvent(stage=pb.STAGE_QUEUED, current=2, message="waiting for a free job slot (place 2)"))
    assert state.describe() == "queued: waiting for a free job slot (place 2)"
    assert state.update(pb.StageEvent(stage=pb.STAGE_SEPARATING, current=3, total=12, message="separating"))
    state.update(pb.StageEvent(stage=pb.STAGE_EMBEDDING, current=10, total=40))
    assert state.song_fraction == (3 / 12 + 10 / 40) / 2 and not state.queued
    state.update(pb.StageEvent(stage=pb.STAGE_QUEUED, current=1, message="the generator is busy (place 1)"))
    assert state.describe().startswith("queued: the generator is busy")
    state.update(pb.StageEvent(stage=pb.STAGE_GENERATING, current=7, total=30, message="step 7/30"))
    assert state.generating and (state.step, state.steps) == (7, 30)
    assert state.describe() == "generating (step 7/30)"


def test_the_song_stages_start_once_though_their_events_interleave() -> None:
    # Separation and embedding run together: their events alternate through the whole song, and each
    # alternation is no new stage (the CLI prints a line per stage: once each, not once per event).
    state = JobState()
    firsts = [state.update(pb.StageEvent(stage=stage, current=i, total=4, message=note))
              for i in range(1, 4)
              for stage, note in ((pb.STAGE_SEPARATING, "separated"), (pb.STAGE_EMBEDDING, "embedded"))]
    assert firsts == [True, True, False, False, False, False]
    assert state.describe() == "embedding (embedded)" and state.song_fraction == 3 / 4
    assert state.update(pb.StageEvent(stage=pb.STAGE_ENCODING_TEXT))
    assert not state.update(pb.StageEvent(stage=pb.STAGE_ENCODING_TEXT, message="again"))


def _png(metadata: dict[str, object] | None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if metadata is not None:
        info.add_text("parameters", "a prompt\nSteps: 2, Seed: 3")
        info.add_text("audiomemory", json.dumps(metadata))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_the_gallery_is_the_images_with_metadata_and_a_remix_finds_the_kept_song(tmp_path: Path) -> None:
    results = Results(tmp_path / "out", tmp_path / "uploads")
    song = tmp_path / "song.mp3"
    song.write_bytes(b"not really a song, but bytes with a hash")
    data = song.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    kept = results.keep_song(song, "song.mp3")
    meta = {"song": {"sha256": digest, "filename": "song.mp3"}, "generation": {"seed": 3, "steps": 2},
            "lyrics": {"full": "la la"}, "fusion": {"strength": 0.25}, "request": {"scheduler": "euler"}}
    saved = results.save(ImageResult(_png(meta), record_from_json(json.dumps(meta))))
    (tmp_path / "out" / "other.png").write_bytes(_png(None))  # a PNG that is not ours
    (tmp_path / "out" / "broken.png").write_bytes(b"\x89PNG not really")
    (entry,) = results.entries()
    assert entry.path == saved and saved.read_bytes() == _png(meta)
    assert entry.caption == "song.mp3 · seed 3" and entry.parameters.endswith("Seed: 3")
    assert entry.form()["lyrics"] == "la la" and entry.form()["scheduler"] == "euler"
    assert results.song_for(entry) == kept and kept.read_bytes() == data and not song.exists()  # moved
    forged = Entry(saved, "", record_from_json(json.dumps({"song": {"sha256": "../../etc"}})))
    assert results.song_for(forged) is None  # a name from a file's metadata never becomes a path
    assert results.save(ImageResult(_png(meta), entry.record)) != saved  # never overwrites an earlier image


def test_the_gallery_lists_the_good_images_and_skips_any_bad_bytes_with_a_line_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results = Results(tmp_path / "out", tmp_path / "uploads")
    bad = hostile()
    for name, data in bad.items():
        (tmp_path / "out" / f"{name}.png").write_bytes(data)
    saved = results.save(ImageResult(png(GOOD), record_from_json(json.dumps(GOOD))))
    with caplog.at_level(logging.WARNING, logger="audiomemory.web.results"):
        entries = results.entries()
    assert [entry.path for entry in entries] == [saved]
    assert entries[0].caption == "song.mp3 · seed 3" and entries[0].form()["scheduler"] == "euler"
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == len(bad) and all("\n" not in line for line in logged)
    for name in bad:
        assert sum(f"/{name}.png" in line for line in logged) == 1, (name, logged)


def test_only_the_last_songs_stay_and_a_song_is_hashed_without_reading_it_whole(tmp_path: Path) -> None:
    import tracemalloc

    results = Results(tmp_path / "out", tmp_path / "uploads", keep_songs=2)
    kept = []
    for n in range(3):
        upload = tmp_path / "gradio" / str(n) / "song.wav"
        upload.parent.mkdir(parents=True)
        upload.write_bytes(bytes([n]) * (8 << 20))
        tracemalloc.start()
        kept.append(results.keep_song(upload, "song.wav"))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 2 << 20, peak  # 8 MiB hashed and moved in blocks
        assert not upload.parent.exists()  # the upload's own copy and folder are gone
    assert [k.exists() for k in kept] == [False, True, True]  # the oldest song left the remix window
    assert results.keep_song(tmp_path / "gradio" / "2" / "song.wav", "song.wav") == kept[2]  # found again
