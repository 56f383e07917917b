"""``audiomemory reproduce IMAGE.png --song SONG``: re-run the job an image's metadata records, compare pixels."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import click
import grpc
import numpy as np

from audiomemory.cli.common import (
    MODELS_HELP,
    PLAINTEXT,
    Connection,
    JobFailed,
    connection_options,
    orchestrator_address,
    run_job,
    write_result,
)
from audiomemory.client import UnreadableMetadata, read_record
from audiomemory.runtime.errors import describe
from audiomemory.runtime.identity import pin_for
from audiomemory.v1 import orchestrator_pb2, record_pb2

BUILT_IN_PROFILES = ("tiny", "default")  # names of profiles the code defines, not files


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def recorded_request(record: record_pb2.ImageRecord) -> orchestrator_pb2.CreateImageOptions:
    """The options an image's record holds, pinned to what served it: for every kind it records but the
    orchestrator, the identity of the replica that served that call (``identity.pin_for``), so the job runs
    on the same models at the same precision or fails saying which is missing. A schema-1 record is not
    pinned: it holds a ``Describe`` answer, maybe another replica's than the one that ran. Lyrics that were transcribed
    go back as given lyrics: the recorded transcript's segments, one line each (``Transcript.lines``) — the
    lines the image's lyrics window was made of — so nothing is transcribed again; for an image of a span, as
    timed lyrics (the segments with their times), which select the same lines inside it."""
    request = orchestrator_pb2.CreateImageOptions()
    request.CopyFrom(record.request)
    request.pins.clear()
    for kind, header in sorted(record.served.items()):
        if kind != "orchestrator" and record.schema >= 2:
            request.pins[kind].CopyFrom(pin_for(header))
    transcript = record.lyrics.transcript
    if request.lyrics_source == orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE and record.lyrics.HasField("transcript"):
        request.lyrics_source = orchestrator_pb2.LYRICS_SOURCE_GIVEN
        if request.HasField("span"):  # a span's words are the segments inside it: they go back with their times
            request.timed_lyrics.extend(transcript.segments)
        else:
            request.lyrics = "\n".join(segment.text for segment in transcript.segments)
    return request


def missing_identity(failed: JobFailed, request: orchestrator_pb2.CreateImageOptions) -> str:
    """What a job refused for a pin (FAILED_PRECONDITION naming a pinned identity) lacks, said plainly; ``""``
    when it failed for another reason."""
    if failed.code is not grpc.StatusCode.FAILED_PRECONDITION:
        return ""
    for kind, pin in sorted(request.pins.items()):
        if pin.identity and pin.identity[:32] in failed.details:
            made = "painted" if kind == "generator" else "made"
            named = pin.describe[:200] if pin.describe[:200].isprintable() else ascii(pin.describe[:200])
            return (f"no {kind} replica runs {named} (identity {pin.identity[:12]}); the image was {made} by it: "
                    f"start one to reproduce it exactly ({failed.format_message()})")
    return ""


def recorded_models(record: record_pb2.ImageRecord, models: str | None) -> str:
    """``--models`` when given; else the profile the image records when it is a built-in one (``tiny``,
    ``default``), ``auto`` when it records none. Any other name is never loaded: a profile's settings go into
    every service (a separator repo, weights files), and nothing an image says chooses a file or a setting."""
    profile = record.profile
    if models:
        if profile and profile != models:
            click.echo(f"the image records the model profile {describe(profile)}; using --models {models}", err=True)
        return models
    if not profile:
        click.echo("the image records no model profile: using auto", err=True)
        return "auto"
    if profile not in BUILT_IN_PROFILES:
        raise click.ClickException(
            f"the image names the model profile {describe(profile)}, which reproduce will not load (only "
            f"{' or '.join(BUILT_IN_PROFILES)} are taken from an image); pass --models"
        )
    click.echo(f"using the model profile the image records: {profile}", err=True)
    return profile


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--song", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The song the image was made from (its hash is checked against the metadata).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the new image.")
@click.option("--models", default=None,
              help=f"{MODELS_HELP} Default: the profile the image records when it is tiny or default (a profile "
              "file an image names is never loaded), auto when it records none.")
@click.option("--orchestrator", help="HOST:PORT of a running orchestrator (default: start everything here).")
@connection_options
def reproduce(image: Path, song: Path, out: Path | None, models: str | None, orchestrator: str | None,
              connection: Connection) -> None:
    """Re-run the job recorded in IMAGE's metadata and report whether the pixels match."""
    original = image.read_bytes()
    try:
        record = read_record(original, str(image))
    except UnreadableMetadata as exc:
        raise click.ClickException(str(exc)) from None
    if record is None or not record.HasField("request"):
        raise click.ClickException(f"{image}: no Audio Memory metadata (the 'audiomemory' PNG text chunk)")
    models = models if orchestrator else recorded_models(record, models)
    digest = hashlib.sha256(song.read_bytes()).hexdigest()
    if digest != record.song.sha256:
        click.secho(f"warning: {song} is not the song the image was made from (sha256 differs)", fg="yellow",
                    err=True)
    request = recorded_request(record)
    if record.lyrics.source == "transcribed" and record.lyrics.HasField("transcript"):
        segments = len(record.lyrics.transcript.segments)
        click.echo(f"re-using the transcript the image records ({segments} segment(s)): nothing is transcribed "
                   "again", err=True)
    with orchestrator_address(models or "auto", orchestrator) as address:
        try:
            result = run_job(address, song, "", {}, request=request,
                             connection=connection if orchestrator else PLAINTEXT)
        except JobFailed as failed:
            missing = missing_identity(failed, request)
            if missing:
                raise click.ClickException(missing) from None
            raise
    if out is not None:
        write_result(result, out, sidecar=False)
    before, after = _pixels(original), _pixels(result.png)
    if before.shape != after.shape:
        raise click.ClickException(f"pixels differ: size {before.shape[1]}x{before.shape[0]} became "
                                   f"{after.shape[1]}x{after.shape[0]}")
    diff = int(np.abs(before - after).max()) if before.size else 0
    same = diff == 0
    click.echo(f"pixels {'match' if same else 'differ'}: max difference {diff}/255 over {before.size} values")
    if not same:
        sys.exit(1)
