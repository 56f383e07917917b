"""``audiomemory generate``: a song and its lyrics in, an image out."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from audiomemory.cli.common import (
    MODELS_HELP,
    PLAINTEXT,
    Connection,
    connection_options,
    orchestrator_address,
    run_job,
    write_result,
)


def _parse_size(size: str | None) -> tuple[int | None, int | None]:
    if not size:
        return None, None
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 512x512, got {size!r}", param_hint="--size") from None
    return w, h


def _read_lyrics(lyrics: str | None) -> str:
    if lyrics is None:
        return ""
    if lyrics == "-":
        return sys.stdin.read()
    return Path(lyrics).read_text(encoding="utf-8")


@click.command()
@click.argument("song", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--lyrics", "lyrics_path", help="Lyrics file, or - for stdin (default: none, audio alone).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("memory.png"),
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strength", type=float, help="Fusion strength alpha in [0, 1] (default 0.1).")
@click.option("--steps", type=int, help="Denoising steps (default 30).")
@click.option("--guidance", type=float, help="Classifier-free guidance (default 7.5).")
@click.option("--size", help="WIDTHxHEIGHT (default 512x512).")
@click.option("--scheduler", help="dpm++2m, euler, euler_a, ddim, pndm (default: the model's).")
@click.option("--lyrics-window", type=click.Choice(["salient", "head"]), default="salient", show_default=True)
@click.option("--negative", default="", help="Negative prompt.")
@click.option("--projection-seed", type=int, default=0, show_default=True)
@click.option("--models", default="auto", show_default=True, help=MODELS_HELP)
@click.option("--orchestrator", help="HOST:PORT of a running orchestrator (default: start everything here).")
@connection_options
@click.option("--sidecar", is_flag=True, help="Also write the metadata as OUT.json.")
def generate(song: Path, lyrics_path: str | None, out: Path, seed: int, strength: float | None, steps: int | None,
             guidance: float | None, size: str | None, scheduler: str | None, lyrics_window: str, negative: str,
             projection_seed: int, models: str, orchestrator: str | None, sidecar: bool,
             connection: Connection) -> None:
    """Turn SONG (wav, flac, mp3, ogg, opus, m4a) and its lyrics into an image."""
    width, height = _parse_size(size)
    options = {"seed": seed, "strength": strength, "steps": steps, "guidance": guidance, "width": width,
               "height": height, "scheduler": scheduler, "lyrics_window": lyrics_window,
               "negative_prompt": negative, "projection_seed": projection_seed}
    with orchestrator_address(models, orchestrator) as address:
        result = run_job(address, song, _read_lyrics(lyrics_path), options,
                         connection=connection if orchestrator else PLAINTEXT)
    write_result(result, out, sidecar)
