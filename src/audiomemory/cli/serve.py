"""``audiomemory serve KIND`` (one service, what a container runs) and ``audiomemory up`` (all six here)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError

from audiomemory.cli.common import TINY_BANNER, stack_overrides
from audiomemory.stack import KINDS, MODEL_KINDS, LocalStack, definition


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


def secured(overrides: dict[str, dict[str, Any]], cert: Path | None, key: Path | None, ca: Path | None,
            tokens: Path | None) -> dict[str, dict[str, Any]]:
    """``overrides`` with TLS on every service (mTLS between the orchestrator and the model services, all
    with the one certificate) and the tokens at the front door."""
    if cert is None and key is None and ca is None and tokens is None:
        return overrides
    if cert is None or key is None or ca is None:
        raise click.UsageError("--tls-cert, --tls-key and --tls-ca go together (--auth-tokens needs them)")
    out = {kind: dict(overrides.get(kind, {})) for kind in KINDS}
    for kind in MODEL_KINDS:
        out[kind].update(tls_cert=cert, tls_key=key, tls_client_ca=ca)
    out["orchestrator"].update(tls_cert=cert, tls_key=key, auth_tokens=tokens, downstream_tls_ca=ca,
                               downstream_tls_cert=cert, downstream_tls_key=key)
    return out


@click.command()
@click.option("--models", default="tiny", show_default=True, help="default, tiny or PROFILE.yaml.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve TLS with this certificate (PEM; its SANs must cover 127.0.0.1).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Its key (PEM).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The CA that signed it: the services require it of each other (mTLS inside).")
@click.option("--auth-tokens", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Tokens the orchestrator accepts (one per line, 32+ characters, optional name after a space; "
              "re-read on change).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface the front door (the orchestrator) binds; :: is every interface, IPv4 and IPv6. "
              "The model services stay on 127.0.0.1.")
def up(models: str, tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None,
       auth_tokens: Path | None, host: str) -> None:
    """Run all six services here until Ctrl-C, printing their addresses."""
    overrides = secured(stack_overrides(models), tls_cert, tls_key, tls_ca, auth_tokens)
    overrides.setdefault("orchestrator", {})["host"] = host
    if models == "tiny":
        click.secho(TINY_BANNER, fg="yellow", err=True)
    with LocalStack(overrides) as stack:
        for kind, service in stack.services.items():
            click.echo(f"{kind:14} {service.address}")
        click.echo(f"orchestrator is the front door: audiomemory generate SONG --orchestrator {stack.address}"
                   + (f" --tls-ca {tls_ca}" if tls_ca else "") + (" --token TOKEN" if auth_tokens else ""))
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("stopping", err=True)
