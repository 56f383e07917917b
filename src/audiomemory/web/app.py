"""The handlers behind the page: a job goes to the orchestrator over gRPC (``Client.start_image``), its
``StageEvent``s become the status line and the progress bar, its PNG is written to ``--out`` as it came
and the gallery is read back from there. A reel (``Client.start_reel``) shows each section's image as it is
painted, then its MP4 (``audiomemory.reel``: the images with the song's own audio), written under
``--out/reels`` and played by the page's video element. The orchestrator's token stays in this process: the browser
only ever sees what a handler returns. The page takes what the orchestrator takes (``Limits``, from its
``Describe``): uploads up to its ``max_upload_bytes``, refused by Gradio while they stream to disk; its
``concurrency`` jobs at once (no more than its ``caller_share``: the page is one caller) and ``max_queue``
waiting in Gradio's queue, whose place in line the page shows."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import grpc

from audiomemory.client import Call, Client, ImageJob, ImageResult, status_text
from audiomemory.defaults import DEFAULT_STRENGTH, STEMS
from audiomemory.lrc import LrcError, looks_like_lrc, parse_lrc
from audiomemory.progress import JobState
from audiomemory.reel import ReelJob, SectionResult, clock, section_name, write_reel
from audiomemory.v1 import orchestrator_pb2, transcriber_pb2
from audiomemory.web.page import SEED_MAX, layout
from audiomemory.web.results import Results, read_entry

GALLERY_SIZE = 60  # the newest images shown
CACHE_CLEANING = (600, 3600)  # every 10 min Gradio deletes its files (abandoned uploads too) older than 1 h


@dataclass(frozen=True)
class Limits:
    """What the orchestrator takes (its ``Describe``'s ``extra``); the defaults are its own defaults, used
    only when its ``Describe`` cannot be read when the page starts."""

    max_upload_bytes: int = 256 << 20
    concurrency: int = 2
    max_queue: int = 8

    @classmethod
    def of(cls, client: Client) -> Limits:
        try:
            extra = client.describe().model.extra
        except grpc.RpcError:
            return cls()
        default = cls()
        limits = cls(*(int(extra.get(key, getattr(default, key))) for key in ("max_upload_bytes", "concurrency",
                                                                               "max_queue")))
        # The page is one caller to the orchestrator: it runs no more jobs at once than a caller's share.
        share = extra.get("caller_share", "")
        return replace(limits, concurrency=min(limits.concurrency, int(share))) if share.isdigit() else limits


def stem_weights(values: tuple[float, ...]) -> dict[str, float] | None:
    """The sliders' weights as ``stem_weights``; ``None`` when every one is 1 (nothing to emphasise)."""
    weights = {stem: float(value) for stem, value in zip(STEMS, values, strict=True)}
    return None if all(value == 1.0 for value in weights.values()) else weights


def lyrics_text(lyrics: str) -> tuple[str, list[transcriber_pb2.TranscriptSegment] | None]:
    """The lyrics box as (lyrics, timed lines): LRC text (``lrc.looks_like_lrc``) goes as timed lines, any other
    as the lyrics; ``LrcError`` names a line of LRC that is not."""
    if not looks_like_lrc(lyrics):
        return lyrics, None
    lines = parse_lrc(lyrics).lines
    return "", [transcriber_pb2.TranscriptSegment(start=line.start, end=line.end, text=line.text) for line in lines]


class WebApp:
    """One page's handlers over one orchestrator ``client``; ``tiny``: the embedded stack runs random weights."""

    def __init__(self, client: Client, results: Results, *, limits: Limits | None = None, tiny: bool = False
                 ) -> None:
        self.client = client
        self.results = results
        self.limits = limits or Limits()
        self.tiny = tiny
        self.schedulers: list[str] = []
        self._jobs: dict[str, Call] = {}  # the running job (an image's or a reel's) of each browser session
        self._lock = threading.Lock()

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="Audio Memory", analytics_enabled=False, delete_cache=CACHE_CLEANING) as blocks:
            page = layout(self.tiny)
            self.page = page
            self.blocks = blocks
            # Only jobs take the queue (and its places): the rest answers at once, a full queue or not.
            blocks.load(self.describe, None, [page.steps, page.width, page.height, page.strength, page.scheduler,
                                              page.from_song, page.sections, page.min_section_seconds, page.status],
                        queue=False)
            blocks.load(self.gallery, None, [page.gallery, page.shown], queue=False)
            page.dice.click(lambda: random.randint(0, SEED_MAX), None, page.seed, queue=False)
            # The place in line shows over the image (Gradio's progress), the job's own status beside it.
            page.generate.click(self.generate, page.form, [page.status, page.image, page.parameters, page.download,
                                                           page.gallery, page.shown, page.banner],
                                concurrency_limit=self.limits.concurrency, concurrency_id="jobs",
                                show_progress_on=[page.image])
            reel_form = [*page.form, page.sections, page.min_section_seconds, page.seed_per_section]
            page.make_reel.click(self.reel, reel_form, [page.status, page.reel_images, page.reel_video, page.banner],
                                 concurrency_limit=self.limits.concurrency, concurrency_id="jobs",
                                 show_progress_on=[page.reel_images])
            # No output: the job's own handler writes its CANCELLED status, which a later "cancelling…"
            # from here could overwrite.
            page.cancel.click(self.cancel, None, None, queue=False, show_progress="hidden")
            page.gallery.select(self.remix, page.shown, [*page.form, page.status], show_progress="hidden",
                                queue=False)
        return blocks.queue(default_concurrency_limit=None, max_size=self.limits.max_queue)

    def launch_options(self) -> dict[str, Any]:
        """``launch``'s settings that carry the limits: the upload cap Gradio checks as a file streams in."""
        return {"max_file_size": self.limits.max_upload_bytes}

    def describe(self) -> tuple[Any, ...]:
        """The form's bounds and defaults from the orchestrator's ``Describe`` (the generator's own lists)."""
        keep = gr.update()
        try:
            info = self.client.describe()
        except grpc.RpcError as err:
            return (*(keep for _ in range(8)), f"the orchestrator cannot be reached: {status_text(err)}")
        gen = info.generator
        self.schedulers = list(gen.schedulers)
        size: dict[str, Any] = {"minimum": gen.min_size, "maximum": gen.max_size, "step": gen.size_multiple,
                                "value": gen.default_size}
        if gen.sizes:  # a compiled generator paints a fixed set of sizes; others are refused
            size["info"] = "only " + ", ".join(f"{s.width}x{s.height}" for s in gen.sizes)
        strength = float(info.model.extra.get("default_strength", DEFAULT_STRENGTH))
        limit = info.model.extra.get("max_seconds", "?")
        return (
            gr.update(minimum=gen.min_steps, maximum=gen.max_steps, value=gen.default_steps),
            gr.update(**size), gr.update(**size), gr.update(value=strength),
            gr.update(choices=[("the model's default", ""), *((s, s) for s in gen.schedulers)], value=""),
            gr.update(visible=info.HasField("transcriber")),
            gr.update(maximum=int(info.model.extra.get("max_sections", "16"))),
            gr.update(label=f"Shortest section, seconds (0: the orchestrator's default, "
                            f"{info.model.extra.get('default_min_section_seconds', '8')})"),
            f"ready: {gen.model.model_id} on {gen.model.device}; songs up to {limit} s and "
            f"{self.limits.max_upload_bytes / (1 << 20):g} MiB",
        )

    def gallery(self) -> tuple[list[tuple[str, str]], list[str]]:
        entries = self.results.entries()[:GALLERY_SIZE]
        return [(str(e.path), e.caption) for e in entries], [str(e.path) for e in entries]

    def _kept(self, song: str | None) -> Path | str:
        """The dropped song, moved where jobs keep it; or what to tell the person."""
        if not song:
            return "song: drop or pick a song file first (wav, flac, mp3, ogg, opus, m4a)"
        try:
            return self.results.keep_song(Path(song), Path(song).name)
        except FileNotFoundError:
            return "song: this upload is no longer kept here; drop the song again"

    def _prepared(self, song: str | None, lyrics: str, from_song: bool, strength: float, seed: float, steps: float,
                  width: float, height: float, scheduler: str | None, weights: tuple[float, ...]
                  ) -> tuple[Path, dict[str, Any]] | str:
        """A job's song (kept) and options from the form (an image's or a reel's); or what to tell the person."""
        kept = self._kept(song)
        if isinstance(kept, str):
            return kept
        try:
            return kept, self._options(lyrics, from_song, strength, seed, steps, width, height, scheduler, weights)
        except LrcError as err:
            return f"lyrics: they look like LRC, but {err}"

    @contextmanager
    def _running(self, request: gr.Request, job: Call) -> Iterator[None]:
        """``job`` is this session's while it runs (Cancel reaches it)."""
        session = request.session_hash or ""
        with self._lock:
            self._jobs[session] = job
        try:
            yield
        finally:
            with self._lock:
                if self._jobs.get(session) is job:
                    del self._jobs[session]

    @staticmethod
    def _options(lyrics: str, from_song: bool, strength: float, seed: float, steps: float, width: float,
                 height: float, scheduler: str | None, weights: tuple[float, ...]) -> dict[str, Any]:
        """The form's options for a job (an image's or a reel's); ``LrcError`` when lyrics that look like LRC
        are not."""
        options: dict[str, Any] = {"seed": int(seed or 0), "strength": float(strength), "steps": int(steps),
                                   "width": int(width), "height": int(height), "scheduler": scheduler or None,
                                   "stem_weights": stem_weights(weights)}
        options["lyrics"], options["timed_lyrics"] = ("", None) if from_song else lyrics_text(lyrics or "")
        if from_song:
            options["lyrics_source"] = orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE
        return options

    def generate(self, song: str | None, lyrics: str, from_song: bool, strength: float, seed: float, steps: float,
                 width: float, height: float, scheduler: str | None, vocals: float, drums: float, bass: float,
                 other: float, request: gr.Request,
                 progress: gr.Progress = gr.Progress()) -> Iterator[dict[Any, Any]]:  # noqa: B008 (Gradio's way)
        page = self.page
        prepared = self._prepared(song, lyrics, from_song, strength, seed, steps, width, height, scheduler,
                                  (vocals, drums, bass, other))
        if isinstance(prepared, str):
            yield {page.status: prepared}
            return
        kept, options = prepared
        job = self.client.start_image(kept, **options)
        started = time.monotonic()
        try:
            with self._running(request, job):
                result = yield from self._follow(job, progress)
        except grpc.RpcError as err:
            cancelled = err.code() == grpc.StatusCode.CANCELLED
            yield {page.status: "CANCELLED: the job was cancelled" if cancelled else status_text(err)}
            return
        if result is None:
            yield {page.status: "the orchestrator ended the job without an image"}
            return
        yield self._show_result(result, time.monotonic() - started)

    def reel(self, song: str | None, lyrics: str, from_song: bool, strength: float, seed: float, steps: float,
             width: float, height: float, scheduler: str | None, vocals: float, drums: float, bass: float,
             other: float, sections: float, min_section_seconds: float, seed_per_section: bool, request: gr.Request,
             progress: gr.Progress = gr.Progress()) -> Iterator[dict[Any, Any]]:  # noqa: B008
        """A reel: the sections found, each image shown as it is painted, then the MP4 with the song."""
        page = self.page
        prepared = self._prepared(song, lyrics, from_song, strength, seed, steps, width, height, scheduler,
                                  (vocals, drums, bass, other))
        if isinstance(prepared, str):
            yield {page.status: prepared}
            return
        kept, options = prepared
        job = self.client.start_reel(kept, sections=int(sections or 0), seed_per_section=bool(seed_per_section),
                                     min_section_seconds=int(min_section_seconds or 0), **options)
        folder = self.results.reel_folder(int(seed or 0))
        images: list[SectionResult] = []
        started = time.monotonic()
        try:
            with self._running(request, job):
                yield from self._follow_reel(job, folder, images, progress)
        except grpc.RpcError as err:
            cancelled = err.code() == grpc.StatusCode.CANCELLED
            yield {page.status: "CANCELLED: the reel was cancelled" if cancelled else status_text(err)}
            return
        if not images:
            yield {page.status: "the orchestrator ended the reel without an image"}
            return
        files = write_reel(kept, images, folder)
        tiny = self.tiny or images[0].record.profile == "tiny"
        yield {page.status: f"reel done in {time.monotonic() - started:.1f} s: {len(images)} sections, "
                            f"{folder.name}", page.reel_video: str(files.video), page.banner: gr.update(visible=tiny)}

    def _follow_reel(self, job: ReelJob, folder: Path, images: list[SectionResult], progress: gr.Progress
                     ) -> Iterator[dict[Any, Any]]:
        """Relay a reel's events to the status line, and each section's image to the reel's gallery as it comes."""
        state, shown, total = JobState(), "", 0
        for item in job:
            if isinstance(item, orchestrator_pb2.ReelSections):
                total = len(item.spans)
                spans = ", ".join(f"{clock(s.start_s)}–{clock(s.end_s)}" for s in item.spans)
                yield {self.page.status: f"{total} sections: {spans}", self.page.reel_images: [],
                       self.page.reel_video: None}
            elif isinstance(item, SectionResult):
                (folder / section_name(item)).write_bytes(item.png)
                images.append(item)
                progress((len(images), total), desc="painting the sections", unit="sections")
                yield {self.page.status: f"painted section {item.index + 1} of {total} ({item.label})",
                       self.page.reel_images: [(str(folder / section_name(s)), f"{s.index + 1} · {s.label}")
                                               for s in images]}
            else:
                state.update(item)
                if state.song_started and state.stage in state.parts and not total:
                    progress(state.song_fraction, desc=state.describe())
                if state.describe() != shown and not images:
                    shown = state.describe()
                    yield {self.page.status: shown}

    def _follow(self, job: ImageJob, progress: gr.Progress) -> Generator[dict[Any, Any], None, ImageResult | None]:
        """Relay a job's events to the status line and the progress bar; return its image."""
        state = JobState()
        shown = ""
        for event in job:
            if isinstance(event, ImageResult):
                return event
            state.update(event)
            if state.generating:
                progress((state.step, state.steps), desc=state.describe(), unit="steps")
            elif state.song_started and state.stage in state.parts:
                progress(state.song_fraction, desc=state.describe())
            if state.describe() != shown:
                shown = state.describe()
                yield {self.page.status: shown}
        return None

    def _show_result(self, result: ImageResult, seconds: float) -> dict[Any, Any]:
        page = self.page
        path = self.results.save(result)
        entry = read_entry(path)
        gallery, shown = self.gallery()
        tiny = self.tiny or result.record.profile == "tiny"
        return {
            page.status: f"done in {seconds:.1f} s: {path.name}", page.image: str(path),
            page.parameters: entry.parameters if entry else "", page.download: str(path),
            page.gallery: gallery, page.shown: shown, page.banner: gr.update(visible=tiny),
        }

    def cancel(self, request: gr.Request) -> None:
        """Cancel this session's job: the call is cancelled, and the orchestrator stops it downstream."""
        with self._lock:
            job = self._jobs.get(request.session_hash or "")
        if job is None:
            gr.Info("no job is running")
            return
        job.cancel()

    def remix(self, shown: list[str], evt: gr.SelectData) -> tuple[Any, ...]:
        """Load a gallery image's settings into the form with a new seed, and its song when it is still here."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        entry = read_entry(Path(shown[index])) if 0 <= index < len(shown) else None
        if entry is None:
            return (*(gr.update() for _ in self.page.form), "that image has no Audio Memory metadata any more")
        form = entry.form()
        song = self.results.song_for(entry)
        name = entry.record.song.filename or "its song"
        scheduler = form["scheduler"] if form["scheduler"] in ["", *self.schedulers] else ""
        return (
            str(song) if song else gr.update(), form["lyrics"], form["from_song"], form["strength"],
            random.randint(0, SEED_MAX),
            form["steps"], form["width"], form["height"], scheduler, *form["stem_weights"],
            f"remix of {entry.path.name}: new seed" + ("" if song else f"; drop {name} again to run it"),
        )
