"""``audiomemory reel``: the memory reel — the song's sections found from its own audio, an image for each, a
contact sheet and an MP4 of the images with the song's own audio (``audiomemory.reel``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import grpc
from tqdm import tqdm

from audiomemory.cli.common import (
    MODELS_HELP,
    PLAINTEXT,
    STEM_WEIGHTS_HELP,
    Connection,
    JobFailed,
    JobProgress,
    connection_options,
    orchestrator_address,
    parse_stem_weights,
)
from audiomemory.cli.generate import LYRICS_HELP, _given_lyrics, _parse_size, job_lyrics
from audiomemory.client import UnreadableMetadata, build_options
from audiomemory.reel import CROSSFADE_SECONDS, VIDEO_FPS, SectionResult, clock, section_name, write_reel
from audiomemory.v1 import orchestrator_pb2


class ReelProgress:
    """A reel's events on stderr: the song's stages as ``generate`` shows them, then one bar over the sections."""

    def __init__(self) -> None:
        self.job = JobProgress()
        self.sections: tqdm | None = None

    def show(self, event: orchestrator_pb2.StageEvent) -> None:
        if self.sections is None:
            if event.stage != orchestrator_pb2.STAGE_GENERATING:
                self.job.show(event)
            return
        if event.stage in (orchestrator_pb2.STAGE_GENERATING, orchestrator_pb2.STAGE_QUEUED) and event.message:
            self.sections.set_postfix_str(event.message, refresh=True)

    def found(self, spans: list[tuple[int, int]]) -> None:
        self.job.close()
        self.sections = tqdm(total=len(spans), desc="painting", unit="section", file=sys.stderr)

    def painted(self) -> None:
        if self.sections is not None:
            self.sections.update(1)

    def close(self) -> None:
        self.job.close()
        if self.sections is not None:
            self.sections.close()


def run_reel(address: str, song: Path, request: orchestrator_pb2.ReelOptions, out: Path,
             connection: Connection = PLAINTEXT) -> list[SectionResult]:
    """One ``CreateReel`` with its progress on stderr; the sections found on stdout as they are, each image
    written to ``out`` as it arrives. Returns the sections' images (a failed call: ``JobFailed``)."""
    progress = ReelProgress()
    images: list[SectionResult] = []
    out.mkdir(parents=True, exist_ok=True)
    with connection.client(address) as client:
        try:
            for item in client.create_reel(song, request=request):
                if isinstance(item, orchestrator_pb2.StageEvent):
                    progress.show(item)
                elif isinstance(item, orchestrator_pb2.ReelSections):
                    spans = [(span.start_s, span.end_s) for span in item.spans]
                    progress.found(spans)
                    click.echo(f"# {len(spans)} sections of {item.seconds:.1f} s")
                    for i, (start, end) in enumerate(spans, start=1):
                        click.echo(f"section {i:2d}  {clock(start)}–{clock(end)}  [{start}, {end}) s")
                else:
                    (out / section_name(item)).write_bytes(item.png)
                    images.append(item)
                    progress.painted()
        except grpc.RpcError as err:
            raise JobFailed(err) from None
        except UnreadableMetadata as err:
            raise click.ClickException(str(err)) from None
        finally:
            progress.close()
    return images


@click.command()
@click.argument("song", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--lyrics", "lyrics_spec", default="auto", metavar="FILE|-|auto|none", help=LYRICS_HELP)
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reel"),
              show_default=True, help="Folder for the section PNGs, sheet.png, reel.mp4 and reel.json.")
@click.option("--sections", type=int, default=0, show_default=True,
              help="Exactly this many sections (2..--max-sections); 0: as many as the song has.")
@click.option("--min-section-seconds", type=int, default=0, help="Shortest section (default: the orchestrator's, 8).")
@click.option("--max-sections", type=int, default=0, help="Most sections (default: the orchestrator's, 8; at most 16).")
@click.option("--seed-per-section", is_flag=True, help="Paint section i with seed + i (default: every section the "
              "same seed, so the differences come from the music).")
@click.option("--stem-weights", callback=parse_stem_weights, metavar="STEM=W,...", help=STEM_WEIGHTS_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strength", type=float, help="Fusion strength alpha in [0, 1] (default: the orchestrator's).")
@click.option("--steps", type=int, help="Denoising steps (default: the generator's).")
@click.option("--guidance", type=float, help="Classifier-free guidance (default 7.5).")
@click.option("--size", help="WIDTHxHEIGHT (default 512x512).")
@click.option("--scheduler", help="dpm++2m, euler, euler_a, ddim, pndm (default: the model's).")
@click.option("--negative", default="", help="Negative prompt.")
@click.option("--fps", type=click.IntRange(1, 60), default=VIDEO_FPS, show_default=True, help="The MP4's frame rate.")
@click.option("--crossfade", type=click.FloatRange(0, 10), default=CROSSFADE_SECONDS, show_default=True,
              help="Seconds of each crossfade, centred on its boundary.")
@click.option("--no-video", is_flag=True, help="The PNGs and the sheet only.")
@click.option("--models", default="auto", show_default=True, help=MODELS_HELP)
@click.option("--orchestrator", help="HOST:PORT of a running orchestrator (default: start everything here).")
@connection_options
def reel(song: Path, lyrics_spec: str, out: Path, sections: int, min_section_seconds: int, max_sections: int,
         seed_per_section: bool, stem_weights: dict[str, float] | None, seed: int, strength: float | None,
         steps: int | None, guidance: float | None, size: str | None, scheduler: str | None, negative: str, fps: int,
         crossfade: float, no_video: bool, models: str, orchestrator: str | None, connection: Connection) -> None:
    """Find SONG's sections and paint each: section PNGs, a contact sheet and an MP4 with the song in OUT."""
    width, height = _parse_size(size)
    image: dict[str, Any] = {"seed": seed, "strength": strength, "steps": steps, "guidance": guidance, "width": width,
                             "height": height, "scheduler": scheduler, "negative_prompt": negative,
                             "filename": song.name}
    connection = connection if orchestrator else PLAINTEXT
    if lyrics_spec not in ("auto", "none", "-") and not Path(lyrics_spec).is_file():
        raise click.BadParameter(f"expected a lyrics file, -, auto or none, got {lyrics_spec!r}", param_hint="--lyrics")
    given = _given_lyrics(lyrics_spec, None)  # an .lrc file's lines keep their times: each section reads its own
    with orchestrator_address(models, orchestrator) as address:
        lyrics, source, image["timed_lyrics"] = job_lyrics(lyrics_spec, given, address, connection)
        options = build_options(lyrics, **image, lyrics_source=source, stem_weights=stem_weights)
        request = orchestrator_pb2.ReelOptions(image=options, sections=sections, max_sections=max_sections,
                                               min_section_seconds=min_section_seconds,
                                               seed_per_section=seed_per_section)
        images = run_reel(address, song, request, out, connection)
    if not images:
        raise click.ClickException("the orchestrator ended the reel without an image")
    files = write_reel(song, images, out, video=not no_video, fps=fps, crossfade=crossfade)
    for path in [*files.sections, files.sheet, *([files.video] if files.video else []), files.index]:
        click.echo(f"wrote {path}", err=True)
