"""What the commands share: the embedded stack (with its model profile), running a job, writing its result, and
reading the options more than one command takes (``--stem-weights``, lyrics files that may be LRC)."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import grpc
from tqdm import tqdm

from audiomemory import profiles
from audiomemory.client import Client, ImageResult, UnreadableMetadata, record_dict, status_text
from audiomemory.defaults import MAX_STEM_WEIGHT, STEMS
from audiomemory.lrc import LrcError, looks_like_lrc, parse_lrc, write_lrc
from audiomemory.progress import JobState, stage_name
from audiomemory.runtime.backend import download_blocked, hf_endpoint
from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.stack import LocalStack
from audiomemory.v1 import orchestrator_pb2, transcriber_pb2

TINY_BANNER = (
    "NOTE: --models tiny uses small RANDOM-WEIGHT models. The pipeline runs for real, "
    "but the image means nothing."
)
MODELS_HELP = "default (real weights), tiny (random weights, offline), auto (default, else tiny), or PROFILE.yaml."


def profile_name(models: str) -> str:
    """The name the orchestrator records for a profile: ``default``, ``tiny``, or the YAML file's absolute path."""
    return models if models in ("default", "tiny") else str(Path(models).resolve())


def stack_overrides(models: str) -> profiles.Overrides:
    """``profiles.resolve(models)`` plus the orchestrator's ``profile`` (written into each image's metadata)."""
    overrides = {kind: dict(settings) for kind, settings in profiles.resolve(models).items()}
    overrides.setdefault("orchestrator", {})["profile"] = profile_name(models)
    return overrides


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence ``logger`` for the block (an attempt whose failure the caller reports itself)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


@dataclass(frozen=True)
class Orchestrator:
    """Where jobs go: an address, and the model profile when this process started the stack there."""

    address: str
    models: str | None = None  # tiny, default or a PROFILE.yaml; None for a running deployment

    @property
    def tiny(self) -> bool:
        return self.models == "tiny"


@contextmanager
def orchestrator_address(models: str, address: str | None) -> Iterator[str]:
    """An orchestrator address: the given one, or an embedded stack for the duration."""
    with open_orchestrator(models, address) as orchestrator:
        yield orchestrator.address


@contextmanager
def open_orchestrator(models: str, address: str | None) -> Iterator[Orchestrator]:
    """The given orchestrator, or an embedded stack of ``models`` (``auto`` falls back to ``tiny``,
    saying so once) for the duration."""
    if address:
        yield Orchestrator(address)
        return
    if models in ("auto", "default") and download_blocked(hf_endpoint(), 3.0) is not None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # no network: let every loader fail fast from its cache
    stack: LocalStack | None = None
    if models == "auto":
        try:
            with _quiet("audiomemory.service"):  # each service's "failed to load": said once, below
                stack = LocalStack(stack_overrides("default")).start()
        except FailedPrecondition as exc:
            click.secho(f"The default models are not available: {exc}", fg="yellow", err=True)
            click.secho("Falling back to --models tiny (run `audiomemory models pull` with network access to "
                        "get the real ones).", fg="yellow", err=True)
            models = "tiny"
    if stack is None:
        if models == "tiny":
            click.secho(TINY_BANNER, fg="yellow", err=True)
        click.echo(f"starting services ({models} models)...", err=True)
        try:
            stack = LocalStack(stack_overrides(models)).start()
        except FailedPrecondition as exc:
            raise click.ClickException(f"{exc}\nWays out: `audiomemory models pull` (with network access), "
                                       "or `--models tiny` to run offline with random weights.") from None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--models") from None
    try:
        yield Orchestrator(stack.address, models)
    finally:
        stack.stop()


class JobProgress:
    """A job's events on stderr (``progress.JobState``): a line per stage, one bar that moves through the
    whole song (separated, embedded and, when asked, transcribed: they run together, each an equal share
    of the bar) and one over the steps."""

    def __init__(self) -> None:
        self.state = JobState()
        self.song_bar: tqdm | None = None
        self.steps_bar: tqdm | None = None
        self.note = ""

    def show(self, event: orchestrator_pb2.StageEvent) -> None:
        state = self.state
        if state.update(event):
            detail = f" ({event.message})" if event.message else ""
            tqdm.write(f"[{stage_name(event.stage)}]{detail}", file=sys.stderr)
        if state.queued:
            if state.queued != self.note:
                self.note = state.queued
                tqdm.write(f"[queued] {state.queued}", file=sys.stderr)
            return
        if event.stage in state.parts and state.song_started:
            if self.song_bar is None:
                self.song_bar = tqdm(total=100, desc="song", unit="%", file=sys.stderr,
                                     bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
            self.song_bar.n = round(100 * state.song_fraction)
            self.song_bar.refresh()
        elif state.generating:
            if self.steps_bar is None:  # made at the stage's 0/total event: the rate starts from the first step
                self.steps_bar = tqdm(total=state.steps, desc="generating", unit="step", file=sys.stderr)
            if state.step > self.steps_bar.n:
                self.steps_bar.update(state.step - self.steps_bar.n)

    def close(self) -> None:
        for bar in (self.song_bar, self.steps_bar):
            if bar is not None:
                bar.close()


@dataclass(frozen=True)
class Connection:
    """How to reach a running front door: its CA (TLS), a client certificate (mTLS), a token."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None

    def client(self, address: str) -> Client:
        try:
            return Client(address, tls_ca=self.tls_ca, tls_cert=self.tls_cert, tls_key=self.tls_key, token=self.token)
        except FailedPrecondition as exc:
            raise click.UsageError(str(exc)) from None


PLAINTEXT = Connection()


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--tls-ca``, ``--tls-cert``, ``--tls-key`` and ``--token`` (or AUDIOMEMORY_TOKEN), given to the
    command as ``connection``."""
    path = click.Path(exists=True, dir_okay=False, path_type=Path)

    @click.option("--tls-ca", type=path, help="CA certificate (PEM) of a TLS front door.")
    @click.option("--tls-cert", type=path, help="Client certificate (PEM) where the server requires one (mTLS).")
    @click.option("--tls-key", type=path, help="Key (PEM) of --tls-cert.")
    @click.option("--token", envvar="AUDIOMEMORY_TOKEN", help="Bearer token (or AUDIOMEMORY_TOKEN); TLS only.")
    @functools.wraps(command)
    def wrapped(*args: Any, tls_ca: Path | None, tls_cert: Path | None, tls_key: Path | None, token: str | None,
                **kwargs: Any) -> Any:
        return command(*args, connection=Connection(tls_ca, tls_cert, tls_key, token), **kwargs)

    return wrapped


class JobFailed(click.ClickException):
    """A job the orchestrator ended with a status: ``code`` and ``details`` as the call's status said them."""

    def __init__(self, err: grpc.RpcError) -> None:
        super().__init__(status_text(err))
        self.code: grpc.StatusCode | None = err.code() if hasattr(err, "code") else None
        self.details = str(err.details() if hasattr(err, "details") else err)


def run_job(address: str, song: Path, lyrics: str, options: dict[str, Any],
            request: orchestrator_pb2.CreateImageOptions | None = None,
            connection: Connection = PLAINTEXT) -> ImageResult:
    """One ``CreateImage`` with its progress on stderr (``JobProgress``); the finished image (a failed call:
    ``JobFailed``)."""
    progress = JobProgress()
    with connection.client(address) as client:
        try:
            for event in client.create_image(song, lyrics=lyrics, request=request, **options):
                if isinstance(event, ImageResult):
                    return event
                progress.show(event)
        except grpc.RpcError as err:
            raise JobFailed(err) from None
        except UnreadableMetadata as err:  # an orchestrator whose record no reader could use
            raise click.ClickException(str(err)) from None
        finally:
            progress.close()
    raise click.ClickException("the orchestrator ended the job without an image")


def write_result(result: ImageResult, out: Path, sidecar: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.png)
    click.echo(f"wrote {out}", err=True)
    if sidecar:
        side = out.with_suffix(".json")
        side.write_text(json.dumps(record_dict(result.record), indent=2, sort_keys=True))
        click.echo(f"wrote {side}", err=True)


STEM_WEIGHTS_HELP = (f"The listener's emphasis: STEM=WEIGHT,... with stems {', '.join(STEMS)}, each weight in "
                     f"[0, {MAX_STEM_WEIGHT:g}] (a stem not named: 1), e.g. vocals=1.5,drums=0.5.")


def parse_stem_weights(_ctx: click.Context | None, _param: click.Parameter | None, spec: str | None
                       ) -> dict[str, float] | None:
    """``--stem-weights vocals=1.5,drums=0.5`` → ``{"vocals": 1.5, "drums": 0.5}`` (a click callback)."""
    if not spec:
        return None
    weights: dict[str, float] = {}
    for item in spec.split(","):
        name, eq, value = (part.strip() for part in item.partition("="))
        if name not in STEMS or not eq:
            raise click.BadParameter(f"expected STEM=WEIGHT with STEM one of {', '.join(STEMS)}, got {item.strip()!r}",
                                     param_hint="--stem-weights")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not 0.0 <= weight <= MAX_STEM_WEIGHT:  # NaN fails too
            raise click.BadParameter(f"{name}: a weight in [0, {MAX_STEM_WEIGHT:g}], got {value!r}",
                                     param_hint="--stem-weights")
        if name in weights:
            raise click.BadParameter(f"{name} is named twice", param_hint="--stem-weights")
        weights[name] = weight
    return weights


@dataclass(frozen=True)
class GivenLyrics:
    """Lyrics from a file (or stdin): plain ``text``, or ``timed`` lines when it is LRC (``text`` then "")."""

    text: str
    timed: tuple[transcriber_pb2.TranscriptSegment, ...] = ()


def read_lyrics(spec: str) -> GivenLyrics:
    """A lyrics file (``-``: stdin) as given lyrics: an ``.lrc`` file, or text whose first line that is not a
    metadata tag starts with a time tag, is read as LRC (``audiomemory.lrc``): its lines with their times (the
    last line's end 0: the song's end); a line that is not LRC is a usage error naming it."""
    name = "stdin" if spec == "-" else spec
    text = sys.stdin.read() if spec == "-" else Path(spec).read_text(encoding="utf-8")
    if not (spec.lower().endswith(".lrc") or looks_like_lrc(text)):
        return GivenLyrics(text)
    try:
        lrc = parse_lrc(text)
    except LrcError as exc:
        raise click.BadParameter(f"{name} is not LRC: {exc}", param_hint="--lyrics") from None
    if not lrc.lines:
        raise click.BadParameter(f"{name}: no timed line with words (LRC lines are [mm:ss.xx]words)",
                                 param_hint="--lyrics")
    return GivenLyrics("", tuple(transcriber_pb2.TranscriptSegment(start=line.start, end=line.end, text=line.text)
                                 for line in lrc.lines))


def timed_lines(result: ImageResult) -> tuple[list[tuple[float, float, str]], str]:
    """An image's lyrics with their times — the transcript's segments when they were heard, else the timed
    lyrics it was given — and where they came from ("transcribed", "given"; ``[]`` and "" when none)."""
    record = result.record
    if record.lyrics.HasField("transcript"):
        return [(s.start, s.end, s.text) for s in record.lyrics.transcript.segments], "transcribed"
    if record.request.timed_lyrics:
        return [(s.start, s.end, s.text) for s in record.request.timed_lyrics], "given"
    return [], ""


def write_lrc_file(result: ImageResult, path: Path) -> None:
    """``--lrc FILE``: the image's timed lyrics as an ``.lrc`` file; a note (and nothing written) when the lyrics
    have no times."""
    lines, source = timed_lines(result)
    if not source:
        click.secho(f"--lrc: the image's lyrics have no times ({result.record.lyrics.source or 'none'}); {path} "
                    "not written", fg="yellow", err=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(write_lrc(lines, {"re": f"audiomemory ({source})"}), encoding="utf-8")
    click.echo(f"wrote {path} ({len(lines)} line(s), {source})", err=True)
