"""The memory reel's files, client side: what ``audiomemory reel`` and the web page make of a reel's sections.

Given the song file and the sections' images in order (``SectionResult``: its index, its span in whole
seconds, the PNG with its record as the orchestrator sent it), ``write_reel(song, sections, folder)`` writes

- each section's PNG, byte for byte as received, as ``section-01-0000-0032s.png`` (``section_name``);
- ``sheet.png``, the contact sheet (``contact_sheet``): the images in order, each labelled with its time
  span (``mm:ss–mm:ss``), drawn with Pillow;
- ``reel.mp4`` (``write_mp4``): H.264 (yuv420p, a small frame rate) showing each image for its section's
  span with a short crossfade centred on each boundary, and the song's own audio muxed in as AAC
  (48 kHz stereo, resampled by FFmpeg's resampler as it is decoded), time-aligned: video frame ``i`` is
  the picture at ``i / fps`` seconds of the song's first decoded sample, the audio's time 0. Both come
  from PyAV (FFmpeg's libx264 and aac ship in its wheels). The song is decoded and encoded a piece at a
  time, the video frames muxed between its pieces as their time comes: neither the song nor the video is
  ever whole in memory, and a still picture costs x264 next to nothing;
- ``reel.json``: the song, its length and, per section, its span and file.

Nothing here talks to a server: ``client.Client.create_reel`` streams the sections and their images.
"""

from __future__ import annotations

import bisect
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from audiomemory.client import Call, record_from_json
from audiomemory.v1 import orchestrator_pb2, record_pb2

VIDEO_FPS = 12  # frames a second: the pictures are still between crossfades
CROSSFADE_SECONDS = 0.75  # each crossfade, centred on its boundary (shortened to fit the shortest section)
AUDIO_RATE = 48_000  # the MP4's AAC: 48 kHz stereo
AUDIO_BITRATE = 160_000
MAX_VIDEO_SIDE = 1024  # larger images are scaled down for the video (the PNGs stay as painted)
SHEET_THUMB = 256  # the contact sheet's image cells, at most this many pixels a side
SHEET_COLUMNS = 4
_LABEL_HEIGHT = 28
_GAP = 8


@dataclass(frozen=True)
class SectionResult:
    """One section of a reel as the orchestrator sent it: its place, its span, the PNG with its record."""

    index: int  # 0-based, in the reel's order (``ReelSections.spans``)
    start_s: int
    end_s: int
    png: bytes
    record: record_pb2.ImageRecord = field(default_factory=record_pb2.ImageRecord)

    @property
    def label(self) -> str:
        return f"{clock(self.start_s)}–{clock(self.end_s)}"


class ReelJob(Call):
    """One running ``CreateReel`` (``Client.start_reel``): iterate it for ``StageEvent`` protos, the
    ``ReelSections`` found and each section's image (``SectionResult``) as it is painted; ``cancel()`` as
    ``ImageJob``'s."""

    def __iter__(self) -> Iterator[orchestrator_pb2.StageEvent | orchestrator_pb2.ReelSections | SectionResult]:
        png = bytearray()
        for response in self._call:
            kind = response.WhichOneof("item")
            if kind != "image":
                yield getattr(response, kind)
                continue
            image = response.image
            png += image.png
            if image.last:
                text = image.metadata_json
                record = record_from_json(text, f"the orchestrator's record of section {image.index}") if text \
                    else record_pb2.ImageRecord()
                yield SectionResult(image.index, image.span.start_s, image.span.end_s, bytes(png), record)
                png = bytearray()


@dataclass(frozen=True)
class ReelFiles:
    """What ``write_reel`` wrote."""

    sections: list[Path]
    sheet: Path
    video: Path | None
    index: Path


def clock(seconds: float) -> str:
    """``mm:ss`` (minutes past 59 keep counting: ``75:02``)."""
    whole = int(seconds)
    return f"{whole // 60:02d}:{whole % 60:02d}"


def section_name(section: SectionResult) -> str:
    """``section-01-0000-0032s.png``: its place (1-based) and its span in seconds."""
    return f"section-{section.index + 1:02d}-{section.start_s:04d}-{section.end_s:04d}s.png"


def _rgb(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB")


def contact_sheet(sections: Sequence[SectionResult], *, columns: int = SHEET_COLUMNS,
                  thumb: int = SHEET_THUMB) -> Image.Image:
    """The images in order, ``columns`` a row, each above its label (its place and its time span)."""
    if not sections:
        raise ValueError("a contact sheet needs at least one section")
    columns = max(1, min(columns, len(sections)))
    rows = math.ceil(len(sections) / columns)
    cell_w, cell_h = thumb, thumb + _LABEL_HEIGHT
    sheet = Image.new("RGB", (_GAP + columns * (cell_w + _GAP), _GAP + rows * (cell_h + _GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for n, section in enumerate(sections):
        x = _GAP + (n % columns) * (cell_w + _GAP)
        y = _GAP + (n // columns) * (cell_h + _GAP)
        image = _rgb(section.png)
        image.thumbnail((thumb, thumb))
        sheet.paste(image, (x + (thumb - image.width) // 2, y + (thumb - image.height) // 2))
        draw.text((x + cell_w // 2, y + thumb + _LABEL_HEIGHT // 2), f"{section.index + 1}  {section.label}",
                  fill="black", font=font, anchor="mm")
    return sheet


def video_size(width: int, height: int, max_side: int = MAX_VIDEO_SIDE) -> tuple[int, int]:
    """The video's frame size for images of ``width`` × ``height``: at most ``max_side`` a side, each even
    (yuv420p halves the colour planes)."""
    scale = min(1.0, max_side / max(width, height))
    w, h = max(2, round(width * scale)), max(2, round(height * scale))
    return w - w % 2, h - h % 2


class _Pictures:
    """The picture at any time of the reel: a section's image, or two blended across a boundary."""

    def __init__(self, sections: Sequence[SectionResult], size: tuple[int, int], crossfade: float) -> None:
        self.images = [np.asarray(_rgb(s.png).resize(size, Image.Resampling.LANCZOS)) for s in sections]
        self.starts = [s.start_s for s in sections]
        shortest = min(s.end_s - s.start_s for s in sections)
        self.fade = max(0.0, min(crossfade, float(shortest)))
        self._still: dict[int, av.VideoFrame] = {}

    def at(self, t: float) -> av.VideoFrame:
        """The frame for ``t`` seconds (its ``pts`` is the caller's to set)."""
        k = max(0, bisect.bisect_right(self.starts, t) - 1)
        for j in (k, k + 1):  # the boundaries either side (a fade is never longer than a section)
            if 0 < j < len(self.starts) and self.fade > 0:
                weight = (t - (self.starts[j] - self.fade / 2)) / self.fade
                if 0.0 < weight < 1.0:
                    blend = (1 - weight) * self.images[j - 1] + weight * self.images[j]
                    return av.VideoFrame.from_ndarray(blend.round().astype(np.uint8), format="rgb24")
        if k not in self._still:  # a still picture: one frame object, muxed again with each pts
            self._still[k] = av.VideoFrame.from_ndarray(self.images[k], format="rgb24").reformat(format="yuv420p")
        return self._still[k]


def _song_audio(path: Path) -> Iterator[av.AudioFrame]:
    """The song's audio as 48 kHz stereo float planes, 1024 samples a frame (AAC's), from its first sample."""
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE, frame_size=1024)
    with av.open(str(path), metadata_errors="replace") as song:
        stream = song.streams.audio[0]
        for frame in song.decode(stream):
            frame.pts = None  # time 0 is the first decoded sample (as the orchestrator decodes it)
            yield from resampler.resample(frame)
    yield from resampler.resample(None)


def write_mp4(song: Path, sections: Sequence[SectionResult], out: Path, *, fps: int = VIDEO_FPS,
              crossfade: float = CROSSFADE_SECONDS, max_side: int = MAX_VIDEO_SIDE) -> float:
    """The reel's MP4 at ``out``; returns the song's length in seconds (its audio's, as decoded)."""
    if not sections:
        raise ValueError("a reel needs at least one section")
    first = _rgb(sections[0].png)
    size = video_size(first.width, first.height, max_side)
    pictures = _Pictures(sections, size, crossfade)
    with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as mp4:
        video = mp4.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        video.codec_context.gop_size = 2 * fps  # a key frame every 2 s: a player seeks quickly
        video.options = {"preset": "veryfast", "crf": "23", "tune": "stillimage"}
        audio = mp4.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        audio.codec_context.bit_rate = AUDIO_BITRATE
        samples, shown = 0, 0

        def pictures_until(seconds: float) -> None:
            nonlocal shown
            while shown / fps < seconds:
                frame = pictures.at(shown / fps)
                frame.pts = shown
                mp4.mux(video.encode(frame))
                shown += 1

        for piece in _song_audio(song):
            piece.pts = samples
            samples += piece.samples
            mp4.mux(audio.encode(piece))
            pictures_until(samples / AUDIO_RATE)
        mp4.mux(audio.encode(None))
        pictures_until(samples / AUDIO_RATE)
        mp4.mux(video.encode(None))
    return samples / AUDIO_RATE


def write_reel(song: Path, sections: Sequence[SectionResult], folder: Path, *, video: bool = True,
               fps: int = VIDEO_FPS, crossfade: float = CROSSFADE_SECONDS) -> ReelFiles:
    """Every file of the reel in ``folder`` (made if missing): the sections' PNGs, the contact sheet, the MP4
    (unless ``video`` is false) and ``reel.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(sections, key=lambda s: s.index)
    paths = []
    for section in ordered:
        path = folder / section_name(section)
        path.write_bytes(section.png)
        paths.append(path)
    sheet = folder / "sheet.png"
    contact_sheet(ordered).save(sheet, format="PNG")
    mp4 = folder / "reel.mp4" if video else None
    seconds = write_mp4(song, ordered, mp4, fps=fps, crossfade=crossfade) if mp4 is not None else None
    index = folder / "reel.json"
    index.write_text(json.dumps({
        "song": song.name, "seconds": seconds, "sheet": sheet.name, "video": mp4.name if mp4 else None,
        "sections": [{"index": s.index, "start_s": s.start_s, "end_s": s.end_s, "png": p.name}
                     for s, p in zip(ordered, paths, strict=True)],
    }, indent=2))
    return ReelFiles(paths, sheet, mp4, index)
