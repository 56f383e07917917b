"""``audiomemory serve KIND`` (one service, what a container runs) and ``audiomemory up`` (all five here)."""

from __future__ import annotations

import logging
import threading

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from audiomemory.cli.common import TINY_BANNER, stack_overrides
from audiomemory.stack import KINDS, LocalStack, definition


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
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


@click.command()
@click.option("--models", default="tiny", show_default=True, help="default, tiny or PROFILE.yaml.")
def up(models: str) -> None:
    """Run all five services here until Ctrl-C, printing their addresses."""
    if models == "tiny":
        click.secho(TINY_BANNER, fg="yellow", err=True)
    with LocalStack(stack_overrides(models)) as stack:
        for kind, service in stack.services.items():
            click.echo(f"{kind:14} {service.address}")
        click.echo(f"orchestrator is the front door: audiomemory generate SONG --orchestrator {stack.address}")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("stopping", err=True)
