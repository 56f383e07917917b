"""The page as a person uses it: ``audiomemory web --models tiny`` in its own process, a headless Chromium.

A dropped song becomes an image with its parameters, a PNG download with its metadata and a gallery
entry that loads its settings back; a text file named ``.mp3`` gets the decoder's message on the page
and the next song still works. ``AUDIOMEMORY_WEB_SCREENSHOT=docs/web.png`` also keeps the screenshot
(the README's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from audiomemory.client import record_from_json
from audiomemory.stack import MODEL_KINDS
from audiomemory.web.results import read_entry

from .server import WebServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny: Callable[[str], dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    folder = tmp_path_factory.mktemp("web")
    # `--models tiny` reads the tiny profile's index under $AUDIOMEMORY_HOME: here the session's tiny models
    # (this checkout's, never a stale copy in ~/.cache), with the encoder framing every 0.5 s (the
    # full-size OpenL3 CNN is the dominant cost of a job: fewer frames keep the test fast).
    profile = {kind: tiny(kind) for kind in MODEL_KINDS}
    profile["audio_encoder"]["hop_seconds"] = 0.5
    (folder / "home" / "tiny").mkdir(parents=True)
    (folder / "home" / "tiny" / "profile.yaml").write_text(yaml.safe_dump(profile))
    web = WebServer(["--models", "tiny", "--out", str(folder / "out")], folder / "web.log",
                    env={"AUDIOMEMORY_HOME": str(folder / "home")})
    try:
        yield web.wait_ready()
    finally:
        web.stop()


def status(page: Any) -> Any:
    return page.locator("#status textarea, #status input").first


def wait_status(page: Any, text: str, timeout: float = 180_000, *, start: bool = False) -> str:
    """Wait until the status line contains ``text`` (``start``: begins with it); return it."""
    page.wait_for_function(
        "([sel, text, start]) => { const e = document.querySelector(sel);"
        " return e && (start ? e.value.startsWith(text) : e.value.includes(text)); }",
        arg=["#status textarea, #status input", text, start], timeout=timeout,
    )
    return str(status(page).input_value())


def set_number(page: Any, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def open_page(page: Any, server: WebServer) -> None:
    page.goto(server.url)
    wait_status(page, "ready", 60_000)  # the form filled from the orchestrator's Describe


def song_in_form(page: Any, name: str) -> Any:
    return page.locator(f'#song td.filename[aria-label="{name}"]').first


def upload(page: Any, path: Path) -> None:
    clear = page.locator('#song button[aria-label="Clear"]')
    if clear.count():  # a song is there: take it away first, as a person would
        clear.first.click()
    page.locator("#song input[type=file]").set_input_files(str(path))
    song_in_form(page, path.name).wait_for()


def small_job(page: Any) -> None:
    set_number(page, "steps", 2)
    set_number(page, "width", 64)
    set_number(page, "height", 64)


def test_a_dropped_song_becomes_an_image_with_its_parameters_a_png_download_and_a_gallery_entry(
    page: Any, server: WebServer, song: Path, tmp_path: Path
) -> None:
    open_page(page, server)
    assert "RANDOM-WEIGHT" in page.locator("#banner").inner_text()
    upload(page, song)
    page.locator("#lyrics textarea").fill("[Chorus]\nla la la\nla la la\nthe night is young")
    small_job(page)
    page.locator("#seed input").fill("11")
    page.locator("#generate").click()
    done = wait_status(page, "done in")
    page.locator("#image img").first.wait_for()
    parameters = page.locator("#parameters textarea").input_value()
    assert "Steps: 2" in parameters and "Seed: 11" in parameters

    with page.expect_download() as info:
        page.locator("#download a").first.click()
    png = tmp_path / "download.png"
    info.value.save_as(png)
    image = Image.open(png)
    assert image.format == "PNG" and image.size == (64, 64)
    assert image.text["parameters"] == parameters  # type: ignore[attr-defined]
    meta = record_from_json(image.text["audiomemory"])  # type: ignore[attr-defined]
    assert meta.song.filename == "song.mp3" and meta.generation.seed == 11
    assert meta.lyrics.text == "la la la, the night is young"
    out_files = list((server.log.parent / "out").glob("*.png"))
    assert [p.name for p in out_files] == [done.split(": ")[-1]]
    assert out_files[0].read_bytes() == png.read_bytes()  # the download is the file as the orchestrator made it

    page.locator("#gallery img").first.wait_for()
    assert page.locator("#gallery img").count() == 1
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] > 0
    if os.environ.get("AUDIOMEMORY_WEB_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["AUDIOMEMORY_WEB_SCREENSHOT"])

    # remix: the gallery image's settings and its song come back into the form, with a new seed
    page.locator('#song button[aria-label="Clear"]').click()
    page.locator("#lyrics textarea").fill("")
    set_number(page, "steps", 7)
    page.locator("#gallery img").first.click()
    wait_status(page, "remix of")
    song_in_form(page, "song.mp3").wait_for()
    assert page.locator("#lyrics textarea").input_value() == "[Chorus]\nla la la\nla la la\nthe night is young"
    assert page.locator("#steps input[type=number]").input_value() == "2"
    seed = page.locator("#seed input").input_value()
    assert seed != "11"
    page.locator("#generate").click()
    wait_status(page, "done in")
    assert page.locator("#gallery img").count() == 2
    remixed = read_entry(max((server.log.parent / "out").glob("*.png"), key=lambda p: p.stat().st_mtime))
    assert remixed is not None and remixed.record.cache_hit  # the same song: the orchestrator's cache
    assert remixed.record.generation.seed == int(seed) and remixed.form()["steps"] == 2


def test_a_text_file_named_mp3_shows_the_decoders_message_and_the_next_song_works(
    page: Any, server: WebServer, song: Path, tmp_path: Path
) -> None:
    fake = tmp_path / "notes.mp3"
    fake.write_text("these are my notes, not a song\n" * 20)
    open_page(page, server)
    upload(page, fake)
    small_job(page)
    page.locator("#generate").click()
    message = wait_status(page, "INVALID_ARGUMENT", 60_000)
    assert "'notes.mp3'" in message and "is not an audio file FFmpeg can read" in message, message
    assert "Traceback" not in page.content()

    upload(page, song)
    page.locator("#generate").click()
    wait_status(page, "done in")
    page.locator("#image img").first.wait_for()


def test_lyrics_from_the_song_are_transcribed_when_the_orchestrator_has_a_transcriber(
    page: Any, server: WebServer, song: Path
) -> None:
    open_page(page, server)
    from_song = page.locator("#from-song input[type=checkbox]")
    from_song.wait_for()  # shown: the embedded tiny stack runs a transcriber
    upload(page, song)
    from_song.check()
    small_job(page)
    page.locator("#generate").click()
    done = wait_status(page, "done in")
    entry = read_entry(server.log.parent / "out" / done.split(": ")[-1])
    assert entry is not None and entry.record.lyrics.source == "transcribed"
    assert entry.form()["from_song"] is True


def test_stem_weights_and_lrc_lyrics_reach_the_record_and_a_remix_brings_them_back(
    page: Any, server: WebServer, song: Path
) -> None:
    open_page(page, server)
    upload(page, song)
    small_job(page)
    page.locator("#lyrics textarea").fill("[00:00.50]one\nan untimed line\n")
    page.locator("#generate").click()
    bad = wait_status(page, "lyrics:", 30_000)
    assert bad == "lyrics: they look like LRC, but line 2: neither a time tag [mm:ss.xx] nor a tag [key:value]: " \
                  "'an untimed line'"
    lrc = "[00:00.00]la la la\n[00:01.00]the night is young\n"
    page.locator("#lyrics textarea").fill(lrc)
    for stem, value in (("vocals", "2.5"), ("drums", "0")):
        box = page.locator(f"#weight-{stem} input[type=number]")
        box.fill(value)
        box.press("Enter")
    page.locator("#generate").click()
    done = wait_status(page, "done in")
    entry = read_entry(server.log.parent / "out" / done.split(": ")[-1])
    assert entry is not None
    assert dict(entry.record.request.stem_weights) == {"vocals": 2.5, "drums": 0.0, "bass": 1.0, "other": 1.0}
    assert [(s.start, s.end, s.text) for s in entry.record.request.timed_lyrics] == [
        (0.0, 1.0, "la la la"), (1.0, 0.0, "the night is young")]
    assert "Stem weights: vocals=2.5 drums=0 bass=1 other=1" in page.locator("#parameters textarea").input_value()

    # remix: the weights and the lyrics with their times come back into the form
    page.locator("#lyrics textarea").fill("")
    page.locator("#weight-vocals input[type=number]").fill("1")
    page.locator("#gallery img").first.click()  # the newest image: this one
    wait_status(page, "remix of")
    assert page.locator("#lyrics textarea").input_value() == lrc
    assert page.locator("#weight-vocals input[type=number]").input_value() == "2.5"
    assert page.locator("#weight-drums input[type=number]").input_value() == "0"


@pytest.fixture(scope="module")
def reel_song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .server import make_song

    return make_song(tmp_path_factory.mktemp("reel-song") / "reel.mp3", 5.0)


@pytest.mark.long
def test_a_reel_shows_its_sections_as_they_are_painted_and_plays_its_video_with_the_song(
    page: Any, server: WebServer, reel_song: Path
) -> None:
    open_page(page, server)
    # The reel's form first: its fields are mounted when the accordion opens, and a value typed into one
    # still mounting can be lost (the reel then asks for 0 sections: as many as the song has).
    page.get_by_text("Reel: an image for each part of the song").click()
    page.locator("#sections input[type=range]").wait_for()
    upload(page, reel_song)
    small_job(page)
    set_number(page, "sections", 2)
    set_number(page, "min-section-seconds", 2)
    page.locator("#seed-per-section input[type=checkbox]").check()
    # the slider's own state has the value (its range input is bound to it, not to the box typed into)
    page.wait_for_function("() => document.querySelector('#sections input[type=range]').value === '2'",
                           timeout=10_000)
    page.locator("#make-reel").click()
    wait_status(page, "reel done in", 240_000)
    assert page.locator("#reel-images img").count() == 2
    reels = list((server.log.parent / "out" / "reels").iterdir())
    assert len(reels) == 1 and (reels[0] / "reel.mp4").is_file() and (reels[0] / "sheet.png").is_file()
    video = page.locator("#reel-video video").first
    video.wait_for()
    # Muted autoplay is allowed in headless Chromium: the element plays the MP4 the page serves.
    page.wait_for_function("v => v.readyState >= 2", arg=video.element_handle(), timeout=30_000)
    assert video.evaluate("v => v.duration") == pytest.approx(5.0, abs=0.2)
    video.evaluate("v => { v.muted = true; return v.play(); }")
    start = video.evaluate("v => v.currentTime")
    page.wait_for_function("([v, t]) => v.currentTime > t + 0.5", arg=[video.element_handle(), start],
                           timeout=30_000)
    assert video.evaluate("v => !v.paused && v.readyState >= 2")
