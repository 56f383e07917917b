"""``audiomemory web``: the web page (the ``web`` extra: Gradio), a client of an orchestrator over gRPC.

Gradio because it is what this field's demos ship with; the page is ``audiomemory.web``. The embedded
stack (``--models``) or a running orchestrator (``--orchestrator`` with the TLS/token options); the
token and certificates stay in this process.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from pathlib import Path

import click

from audiomemory.cli.common import MODELS_HELP, PLAINTEXT, Connection, connection_options, open_orchestrator


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _login(auth: str | None, host: str, no_auth: bool) -> tuple[str, str] | None:
    """``--auth USER:PASSWORD`` as Gradio's login; a host other than loopback needs one (or ``--no-auth-i-know``)."""
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise click.BadParameter("expected USER:PASSWORD", param_hint="--auth")
        return user, password
    if not _loopback(host) and not no_auth:
        raise click.UsageError(f"--host {host} serves the page beyond this machine: give it a login with --auth "
                               "USER:PASSWORD (or AUDIOMEMORY_WEB_AUTH), or pass --no-auth-i-know")
    return None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the page on.")
@click.option("--port", type=int, default=7860, show_default=True,
              help="Port to serve the page on (0: the first free one from 7860).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/web"), show_default=True,
              help="Folder the images go to; the gallery shows the ones in it.")
@click.option("--auth", envvar="AUDIOMEMORY_WEB_AUTH",
              help="USER:PASSWORD the page asks for (or AUDIOMEMORY_WEB_AUTH).")
@click.option("--no-auth-i-know", "no_auth", is_flag=True, help="Serve a non-loopback --host without a login.")
@click.option("--models", default="auto", show_default=True, help=MODELS_HELP)
@click.option("--orchestrator", help="HOST:PORT of a running orchestrator (default: start everything here).")
@connection_options
def web(host: str, port: int, out: Path, auth: str | None, no_auth: bool, models: str, orchestrator: str | None,
        connection: Connection) -> None:
    """Serve the web page: drop a song, watch the job, see the image and the gallery."""
    login = _login(auth, host, no_auth)
    # This run's songs (the last KEEP_SONGS jobs', for remixes) and Gradio's own files (uploads as they
    # arrive, copies of what the page shows): one folder, gone at exit.
    work = Path(tempfile.mkdtemp(prefix="audiomemory-web-"))
    os.environ.setdefault("GRADIO_TEMP_DIR", str(work / "gradio"))  # read when Gradio is imported
    try:
        from audiomemory.web.app import Limits, WebApp
        from audiomemory.web.results import Results
    except ImportError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise click.ClickException(f"the web page needs the web extra (pip install 'audiomemory[web]'): {exc}"
                                   ) from None
    try:
        with open_orchestrator(models, orchestrator) as target, \
                (connection if orchestrator else PLAINTEXT).client(target.address) as client:
            results = Results(out.resolve(), work / "songs")
            app = WebApp(client, results, limits=Limits.of(client), tiny=target.tiny)
            _, url, _ = app.build().launch(
                server_name=host, server_port=port or None, auth=login,
                allowed_paths=[str(results.out), str(results.uploads)],
                footer_links=[], ssr_mode=False, show_error=False, quiet=True, prevent_thread_lock=True,
                **app.launch_options())
            click.echo(f"serving the page at {url} (orchestrator {target.address}; images in {results.out}); "
                       "Ctrl+C stops it", err=True)
            app.blocks.block_thread()
    finally:
        shutil.rmtree(work, ignore_errors=True)
