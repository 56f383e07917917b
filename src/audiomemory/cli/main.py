"""``audiomemory`` — turn a song into an image of how it is remembered.

    audiomemory generate SONG --lyrics lyrics.txt -o out.png        # embedded: all services in-process
    audiomemory generate SONG --orchestrator HOST:PORT              # against a running deployment
    audiomemory serve generator --port 50051 --model ./sd15         # one service (what a container runs)
    audiomemory up --models tiny                                    # all five services, long-running
    audiomemory models pull | make-tiny | list
    audiomemory describe HOST:PORT [HOST:PORT ...]
    audiomemory reproduce IMAGE.png --song SONG                     # re-run from the PNG's metadata
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import grpc
import numpy as np
from google.protobuf import json_format
from google.protobuf.json_format import MessageToDict
from pydantic import ValidationError
from pydantic_settings import SettingsError
from tqdm import tqdm

from audiomemory import profiles
from audiomemory.client import Client, ImageResult, read_metadata
from audiomemory.runtime.backend import download_blocked, hf_endpoint
from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.stack import KINDS, MODEL_KINDS, LocalStack, definition
from audiomemory.v1 import (
    audio_encoder_pb2_grpc,
    common_pb2,
    generator_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    separator_pb2_grpc,
    text_encoder_pb2_grpc,
)

TINY_BANNER = (
    "NOTE: --models tiny uses small RANDOM-WEIGHT models. The pipeline runs for real, "
    "but the image means nothing."
)
_STAGE_NAMES = {v: k.removeprefix("STAGE_").lower().replace("_", " ") for k, v in orchestrator_pb2.Stage.items()}


def _setup_logging(verbose: bool) -> None:
    if not verbose:  # the model libraries' advisory chatter is not for end users
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


CLI_HELP = "Turn a song into an image of how it is remembered.\n\n\b\n" + "\n".join(
    line.strip() for line in __doc__.splitlines()[2:] if line.strip()
)


@click.group(help=CLI_HELP)
@click.option("-v", "--verbose", is_flag=True, help="Log service activity.")
def cli(verbose: bool) -> None:
    _setup_logging(verbose)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(kind: str, args: tuple[str, ...]) -> None:
    """Run one service until SIGTERM (config: flags like --port, or AUDIOMEMORY_<KIND>_* env vars)."""
    from audiomemory.runtime.service import serve_forever

    logging.getLogger().setLevel(logging.INFO)
    d = definition(kind)
    if "--help" in args or "-h" in args:
        click.echo(f"audiomemory serve {kind} [flags]; each flag also reads AUDIOMEMORY_{kind.upper()}_<NAME>:")
        for name, info in d.config_class.model_fields.items():
            click.echo(f"  --{name.replace('_', '-'):24} {info.description or ''} (default: {info.default!r})")
        return
    try:
        config = d.config_class.from_args(list(args))
    except (SettingsError, ValidationError) as exc:
        raise click.UsageError(f"{exc} (see: audiomemory serve {kind} --help)") from None
    serve_forever(d, config)


@contextmanager
def _orchestrator(models: str, address: str | None) -> Iterator[str]:
    """An orchestrator address: the given one, or an embedded stack for the duration."""
    if address:
        yield address
        return
    if models in ("auto", "default") and download_blocked(hf_endpoint(), 3.0) is not None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # no network: let every loader fail fast from its cache
    stack: LocalStack | None = None
    if models == "auto":
        try:
            stack = LocalStack(profiles.resolve("default")).start()
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
            stack = LocalStack(profiles.resolve(models)).start()
        except FailedPrecondition as exc:
            raise click.ClickException(f"{exc}\nWays out: `audiomemory models pull` (with network access), "
                                       "or `--models tiny` to run offline with random weights.") from None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--models") from None
    try:
        yield stack.address
    finally:
        stack.stop()


def _run_job(address: str, song: Path, lyrics: str, options: dict[str, Any],
             request: orchestrator_pb2.CreateImageOptions | None = None) -> ImageResult:
    steps_bar: tqdm | None = None
    last_stage = None
    with Client(address) as client:
        try:
            for event in client.create_image(song, lyrics=lyrics, request=request, **options):
                if isinstance(event, ImageResult):
                    return event
                if event.stage == orchestrator_pb2.STAGE_GENERATING and event.total:
                    if steps_bar is None:
                        steps_bar = tqdm(total=event.total, desc="generating", unit="step", file=sys.stderr)
                    steps_bar.total = max(event.total, event.current)  # a scheduler may add a warm-up step
                    steps_bar.n = event.current
                    steps_bar.refresh()
                    continue
                if event.stage != last_stage or event.message:
                    detail = f" {event.current}/{event.total}" if event.total else ""
                    note = f" ({event.message})" if event.message else ""
                    click.echo(f"[{_STAGE_NAMES.get(event.stage, '?')}]{detail}{note}", err=True)
                    last_stage = event.stage
        except grpc.RpcError as err:
            raise click.ClickException(f"{err.code().name}: {err.details()}") from None
        finally:
            if steps_bar is not None:
                steps_bar.close()
    raise click.ClickException("the orchestrator ended the job without an image")


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


def _write_result(result: ImageResult, out: Path, sidecar: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.png)
    click.echo(f"wrote {out}", err=True)
    if sidecar:
        side = out.with_suffix(".json")
        side.write_text(json.dumps(result.metadata, indent=2, sort_keys=True))
        click.echo(f"wrote {side}", err=True)


MODELS_HELP = "default (real weights), tiny (random weights, offline), auto (default, else tiny), or PROFILE.yaml."


@cli.command()
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
@click.option("--sidecar", is_flag=True, help="Also write the metadata as OUT.json.")
def generate(song: Path, lyrics_path: str | None, out: Path, seed: int, strength: float | None, steps: int | None,
             guidance: float | None, size: str | None, scheduler: str | None, lyrics_window: str, negative: str,
             projection_seed: int, models: str, orchestrator: str | None, sidecar: bool) -> None:
    """Turn SONG (wav, flac, mp3, ogg, opus, m4a) and its lyrics into an image."""
    width, height = _parse_size(size)
    options = {"seed": seed, "strength": strength, "steps": steps, "guidance": guidance, "width": width,
               "height": height, "scheduler": scheduler, "lyrics_window": lyrics_window,
               "negative_prompt": negative, "projection_seed": projection_seed}
    with _orchestrator(models, orchestrator) as address:
        result = _run_job(address, song, _read_lyrics(lyrics_path), options)
    _write_result(result, out, sidecar)


@cli.command()
@click.option("--models", default="tiny", show_default=True, help=MODELS_HELP)
def up(models: str) -> None:
    """Run all five services here until Ctrl-C, printing their addresses."""
    if models == "tiny":
        click.secho(TINY_BANNER, fg="yellow", err=True)
    with LocalStack(profiles.resolve(models)) as stack:
        for kind, service in stack.services.items():
            click.echo(f"{kind:14} {service.address}")
        click.echo(f"orchestrator is the front door: audiomemory generate SONG --orchestrator {stack.address}")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("stopping", err=True)


@cli.group()
def models() -> None:
    """Fetch, fake or list model weights."""


@models.command("pull")
@click.option("--models", "profile", default="default", show_default=True, help="default or PROFILE.yaml.")
@click.option("--only", type=click.Choice(MODEL_KINDS), multiple=True, help="Only these services.")
def models_pull(profile: str, only: tuple[str, ...]) -> None:
    """Download the real weights into the standard caches (HF_HOME, TORCH_HOME) ahead of time."""
    overrides = profiles.resolve(profile)
    for kind in only or MODEL_KINDS:
        d = definition(kind)
        config = d.config_class(**overrides.get(kind, {}))
        click.echo(f"{kind}: pulling {config.backend} weights...", err=True)
        d.make_backend_class(config.backend).pull(config)
    click.echo("done", err=True)


@models.command("make-tiny")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Where (default $AUDIOMEMORY_HOME/tiny).")
@click.option("--force", is_flag=True, help="Rewrite even if present.")
def models_make_tiny(root: Path | None, force: bool) -> None:
    """Write small random-weight models loadable by the real code paths."""
    overrides = profiles.make_tiny(root, force=force)
    click.echo(f"tiny models in {root or profiles.tiny_root()}")
    click.echo(json.dumps(overrides, indent=2, sort_keys=True, default=str))


@models.command("list")
def models_list() -> None:
    """Installed backends per service and their default settings."""
    from audiomemory.runtime.registry import installed_backends

    for kind in MODEL_KINDS:
        config = definition(kind).config_class()
        fields = {k: v for k, v in config.model_dump().items() if k in ("backend", "model", "content_type",
                                                                        "input_repr", "embedding_size")}
        click.echo(f"{kind:14} installed: {', '.join(installed_backends(kind)) or 'none'}; default: {fields}")
    tiny = profiles.tiny_root()
    click.echo(f"tiny profile: {tiny} ({'present' if profiles.tiny_present(tiny) else 'absent'})")


_STUBS: list[tuple[str, Callable[[grpc.Channel], Any]]] = [
    ("orchestrator", orchestrator_pb2_grpc.OrchestratorStub),
    ("separator", separator_pb2_grpc.SeparatorStub),
    ("audio_encoder", audio_encoder_pb2_grpc.AudioEncoderStub),
    ("text_encoder", text_encoder_pb2_grpc.TextEncoderStub),
    ("generator", generator_pb2_grpc.GeneratorStub),
]


def describe_address(address: str, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
    """(kind, Describe as a dict) of whichever Audio Memory service answers at ``address``."""
    with grpc.insecure_channel(address) as channel:
        for kind, stub in _STUBS:
            try:
                info = stub(channel).Describe(common_pb2.DescribeRequest(), timeout=timeout)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    continue
                raise click.ClickException(f"{address}: {err.code().name}: {err.details()}") from None
            return kind, MessageToDict(info, preserving_proto_field_name=True)
    raise click.ClickException(f"{address}: no Audio Memory service answers there")


@cli.command()
@click.argument("addresses", nargs=-1, required=True)
def describe(addresses: tuple[str, ...]) -> None:
    """Print the Describe of the service(s) at HOST:PORT as JSON."""
    out = {}
    for address in addresses:
        kind, info = describe_address(address)
        out[address] = {"service": kind, **info}
    click.echo(json.dumps(out if len(out) > 1 else next(iter(out.values())), indent=2, sort_keys=True))


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@cli.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--song", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The song the image was made from (its hash is checked against the metadata).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the new image.")
@click.option("--models", default="auto", show_default=True, help=MODELS_HELP)
@click.option("--orchestrator", help="HOST:PORT of a running orchestrator (default: start everything here).")
def reproduce(image: Path, song: Path, out: Path | None, models: str, orchestrator: str | None) -> None:
    """Re-run the job recorded in IMAGE's metadata and report whether the pixels match."""
    original = image.read_bytes()
    metadata = read_metadata(original)
    if metadata is None or "request" not in metadata:
        raise click.ClickException(f"{image}: no Audio Memory metadata (the 'audiomemory' PNG text chunk)")
    digest = hashlib.sha256(song.read_bytes()).hexdigest()
    if digest != metadata.get("song", {}).get("sha256"):
        click.secho(f"warning: {song} is not the song the image was made from (sha256 differs)", fg="yellow",
                    err=True)
    request = json_format.ParseDict(metadata["request"], orchestrator_pb2.CreateImageOptions())
    with _orchestrator(models, orchestrator) as address:
        result = _run_job(address, song, "", {}, request=request)
    if out is not None:
        _write_result(result, out, sidecar=False)
    before, after = _pixels(original), _pixels(result.png)
    if before.shape != after.shape:
        raise click.ClickException(f"pixels differ: size {before.shape[1]}x{before.shape[0]} became "
                                   f"{after.shape[1]}x{after.shape[0]}")
    diff = int(np.abs(before - after).max()) if before.size else 0
    same = diff == 0
    click.echo(f"pixels {'match' if same else 'differ'}: max difference {diff}/255 over {before.size} values")
    if not same:
        sys.exit(1)


def _register_optional_commands() -> None:
    try:
        from audiomemory.cli.cluster import cluster
    except ImportError:
        return
    cli.add_command(cluster)


_register_optional_commands()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
