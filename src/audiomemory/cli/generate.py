"""``audiomemory generate``: a song and its lyrics (given, heard from its vocal stem, or none) in, an image out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import grpc

from audiomemory.cli.common import (
    MODELS_HELP,
    PLAINTEXT,
    STEM_WEIGHTS_HELP,
    Connection,
    GivenLyrics,
    connection_options,
    orchestrator_address,
    parse_stem_weights,
    read_lyrics,
    run_job,
    write_lrc_file,
    write_result,
)
from audiomemory.client import ImageResult
from audiomemory.v1 import orchestrator_pb2, transcriber_pb2

LYRICS_HELP = ("Lyrics file, - for stdin, auto (transcribe the vocal stem when a transcriber is available, else "
               "none) or none (the audio alone steers). Default: auto. An .lrc file (or text whose lines start "
               "with [mm:ss.xx] time tags) gives the lyrics with their times.")


def _parse_size(size: str | None) -> tuple[int | None, int | None]:
    if not size:
        return None, None
    try:
        w, h = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 512x512, got {size!r}", param_hint="--size") from None
    return w, h


def lyrics_options(spec: str, address: str, connection: Connection) -> tuple[str, int]:
    """``--lyrics`` as (lyrics, lyrics_source): given text, TRANSCRIBE, or NONE (``auto`` asks the orchestrator
    whether a transcriber stands behind it, and says so in one line when none does)."""
    if spec == "none":
        return "", orchestrator_pb2.LYRICS_SOURCE_NONE
    if spec == "auto":
        with connection.client(address) as client:
            try:
                has_transcriber = client.describe().HasField("transcriber")
            except grpc.RpcError as err:
                raise click.ClickException(f"{err.code().name}: {err.details()}") from None
        if has_transcriber:
            return "", orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE
        click.echo("note: no lyrics given and no transcriber behind the orchestrator: the audio alone steers "
                   "(--lyrics FILE to give them)", err=True)
        return "", orchestrator_pb2.LYRICS_SOURCE_NONE
    text = sys.stdin.read() if spec == "-" else Path(spec).read_text(encoding="utf-8")
    return text, orchestrator_pb2.LYRICS_SOURCE_GIVEN


def print_lyrics(result: ImageResult) -> None:
    """What the image's lyrics were: the transcript's segments with their times, or the given lyrics."""
    lyrics = result.record.lyrics
    if lyrics.HasField("transcript"):
        transcript = lyrics.transcript
        click.echo(f"# transcribed ({transcript.language or '-'}), {len(transcript.segments)} segment(s); "
                   f"window: {lyrics.text}")
        for seg in transcript.segments:
            click.echo(f"[{_clock(seg.start)} → {_clock(seg.end)}] {seg.text}")
    elif lyrics.source == "given" and result.record.request.timed_lyrics:
        timed = result.record.request.timed_lyrics
        click.echo(f"# given with their times, {len(timed)} line(s); window: {lyrics.text}")
        for seg in timed:
            click.echo(f"[{_clock(seg.start)} → {_clock(seg.end) if seg.end else 'end'}] {seg.text}")
    elif lyrics.source == "given":
        click.echo(f"# given; window: {lyrics.text}")
        click.echo(lyrics.full)
    else:
        click.echo("# no lyrics: the audio alone steered")


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:05.2f}"


@click.command()
@click.argument("song", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--lyrics", "lyrics_spec", default="auto", metavar="FILE|-|auto|none", help=LYRICS_HELP)
@click.option("--print-lyrics", "print_lyrics_", is_flag=True,
              help="Print the lyrics the image read (what was heard, with times).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("memory.png"),
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strength", type=float,
              help="Fusion strength alpha in [0, 1] (default: the orchestrator's, 0.1 unless configured).")
@click.option("--steps", type=int, help="Denoising steps (default: the generator's, 20).")
@click.option("--guidance", type=float, help="Classifier-free guidance (default 7.5).")
@click.option("--size", help="WIDTHxHEIGHT (default 512x512).")
@click.option("--scheduler", help="dpm++2m, euler, euler_a, ddim, pndm (default: the model's).")
@click.option("--lyrics-window", type=click.Choice(["salient", "head"]), default="salient", show_default=True)
@click.option("--negative", default="", help="Negative prompt.")
@click.option("--projection-seed", type=int, default=0, show_default=True)
@click.option("--models", default="auto", show_default=True, help=MODELS_HELP)
@click.option("--orchestrator", help="HOST:PORT of a running orchestrator (default: start everything here).")
@connection_options
@click.option("--stem-weights", callback=parse_stem_weights, metavar="STEM=W,...", help=STEM_WEIGHTS_HELP)
@click.option("--lrc", "lrc_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the lyrics with their times (what was heard, or the LRC given) as an .lrc file.")
@click.option("--sidecar", is_flag=True, help="Also write the metadata as OUT.json.")
def generate(song: Path, lyrics_spec: str, print_lyrics_: bool, out: Path, seed: int, strength: float | None,
             steps: int | None, guidance: float | None, size: str | None, scheduler: str | None, lyrics_window: str,
             negative: str, projection_seed: int, models: str, orchestrator: str | None,
             stem_weights: dict[str, float] | None, lrc_out: Path | None, sidecar: bool,
             connection: Connection) -> None:
    """Turn SONG (wav, flac, mp3, ogg, opus, m4a) and its lyrics into an image."""
    width, height = _parse_size(size)
    options: dict[str, Any] = {
        "seed": seed, "strength": strength, "steps": steps, "guidance": guidance, "width": width, "height": height,
        "scheduler": scheduler, "lyrics_window": lyrics_window, "negative_prompt": negative,
        "projection_seed": projection_seed, "stem_weights": stem_weights}
    connection = connection if orchestrator else PLAINTEXT
    given = _given_lyrics(lyrics_spec, lrc_out)  # before the services start: a bad file fails at once
    with orchestrator_address(models, orchestrator) as address:
        lyrics, source, options["timed_lyrics"] = job_lyrics(lyrics_spec, given, address, connection)
        result = run_job(address, song, lyrics, {**options, "lyrics_source": source}, connection=connection)
    write_result(result, out, sidecar)
    if lrc_out is not None:
        write_lrc_file(result, lrc_out)
    if print_lyrics_:
        print_lyrics(result)


def job_lyrics(spec: str, given: GivenLyrics | None, address: str, connection: Connection
               ) -> tuple[str, int, list[transcriber_pb2.TranscriptSegment] | None]:
    """A job's lyrics, their source and their timed lines: the file given (an .lrc file's lines keep their
    times), else ``--lyrics auto``/``none`` (``lyrics_options``)."""
    if given is None:
        return (*lyrics_options(spec, address, connection), None)
    return given.text, orchestrator_pb2.LYRICS_SOURCE_GIVEN, list(given.timed) or None


def _given_lyrics(spec: str, lrc_out: Path | None) -> GivenLyrics | None:
    """``--lyrics FILE`` (or ``-``) read, an LRC file parsed; ``None`` for auto and none. ``--lrc`` needs lyrics
    that can have times."""
    if spec not in ("auto", "none", "-") and not Path(spec).is_file():
        raise click.BadParameter(f"expected a lyrics file, -, auto or none, got {spec!r}", param_hint="--lyrics")
    given = None if spec in ("auto", "none") else read_lyrics(spec)
    if lrc_out is not None and (spec == "none" or (given is not None and not given.timed)):
        raise click.BadParameter("writes lyrics with their times: transcribed ones (--lyrics auto) or an LRC file; "
                                 f"--lyrics {'none' if spec == 'none' else 'with plain text'} has none",
                                 param_hint="--lrc")
    return given
