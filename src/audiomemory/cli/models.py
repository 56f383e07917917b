"""``audiomemory models pull | make-tiny | list``: fetch, fake or list model weights."""

from __future__ import annotations

import json
from pathlib import Path

import click

from audiomemory import profiles
from audiomemory.runtime.backend import download_blocked, hf_endpoint
from audiomemory.runtime.errors import shorten
from audiomemory.stack import MODEL_KINDS, definition

WAYS_OUT = "Run it where the network is reachable (or mount the caches: HF_HOME, TORCH_HOME), or use --models tiny."


@click.group()
def models() -> None:
    """Fetch, fake or list model weights."""


@models.command("pull")
@click.option("--models", "profile", default="default", show_default=True, help="default or PROFILE.yaml.")
@click.option("--only", type=click.Choice(MODEL_KINDS), multiple=True, help="Only these services.")
def models_pull(profile: str, only: tuple[str, ...]) -> None:
    """Download the real weights into the standard caches (HF_HOME, TORCH_HOME) ahead of time.

    One line per model; a model that cannot be fetched says from where and why, and the command exits 1.
    """
    overrides = profiles.resolve(profile)
    blocked = download_blocked(hf_endpoint(), 3.0)  # no network: say so at once instead of retrying each
    failed = []
    for kind in only or MODEL_KINDS:
        d = definition(kind)
        config = d.config_class(**overrides.get(kind, {}))
        # ``auto``: what it picks on a CPU without any of the instructions it looks for (the compiled backend,
        # whose pull fetches the eager one's weights too), so pods on any kind of node find what they run.
        config = config.model_copy(update={"backend": d.backend_name(config, flags=frozenset())})
        what = f"{config.backend} model {getattr(config, 'model', None) or config.backend}"
        if blocked is not None:
            click.echo(f"{kind}: {what} not fetched: {blocked}. {WAYS_OUT}", err=True)
            failed.append(kind)
            continue
        click.echo(f"{kind}: pulling {what}...", err=True)
        try:
            d.make_backend_class(config.backend).pull(config)
        except Exception as exc:  # a download's many failure types: one line each, no traceback
            click.echo(f"{kind}: {what} not fetched: {type(exc).__name__}: {shorten(exc)}. {WAYS_OUT}", err=True)
            failed.append(kind)
    if failed:
        raise SystemExit(1)
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
