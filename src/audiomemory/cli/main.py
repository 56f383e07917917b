"""``audiomemory`` — turn a song into an image of how it is remembered.

    audiomemory generate SONG --lyrics lyrics.txt -o out.png        # embedded; no --lyrics: transcribed
    audiomemory generate SONG --orchestrator HOST:PORT              # against a running deployment
    audiomemory reel SONG -o reel/                                  # an image a section, a sheet, an MP4
    audiomemory serve generator --port 50051 --model ./sd15         # one service (what a container runs)
    audiomemory up --models tiny                                    # all six services, long-running
    audiomemory models pull | make-tiny | list
    audiomemory describe HOST:PORT [HOST:PORT ...]
    audiomemory reproduce IMAGE.png --song SONG                     # re-run from the PNG's metadata
    audiomemory web --models tiny                                   # the web page (the web extra)

One module a command: ``generate``, ``reel``, ``serve`` (serve, up), ``models``, ``describe``, ``reproduce``,
``web`` (runs with the ``web`` extra), ``cluster`` (with the ``cluster`` extra); what they share (the
embedded stack, running a job with its progress, writing the result) is ``common``.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from audiomemory.cli.describe import describe
from audiomemory.cli.generate import generate
from audiomemory.cli.models import models
from audiomemory.cli.reel import reel
from audiomemory.cli.reproduce import reproduce
from audiomemory.cli.serve import serve, up
from audiomemory.cli.web import web
from audiomemory.runtime.allocator import reexec_with_tcmalloc


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
    line.strip() for line in (__doc__ or "").splitlines()[2:11] if line.strip()
)


@click.group(help=CLI_HELP)
@click.option("-v", "--verbose", is_flag=True, help="Log service activity.")
def cli(verbose: bool) -> None:
    _setup_logging(verbose)


for command in (generate, reel, serve, up, models, describe, reproduce, web):
    cli.add_command(command)


def _register_optional_commands() -> None:
    try:
        from audiomemory.cli.cluster import cluster
    except ImportError:
        return
    cli.add_command(cluster)


_register_optional_commands()


#: Commands that run models: they start again with tcmalloc preloaded when it is installed (allocator.py).
MODEL_COMMANDS = frozenset({"serve", "up", "generate", "reel", "reproduce", "web"})

#: Commands that host every model service in one process, so the models share its cores.
SHARED_CORE_COMMANDS = MODEL_COMMANDS - {"serve"}


def share_cores_politely() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the environment chose: torch's OpenMP threads sleep at a
    barrier instead of spinning. The separator streams stems into OpenL3 while it runs, so with every
    service in one process both models compute at once on the same cores, and a spinning thread takes
    the time the other model needs: passive, separating 60 s and embedding its four stems at once in
    one process took 6 % less time on two cores (13 % in two processes); alone on its cores (``serve``)
    the separator is 14 % slower passive, so ``serve`` keeps spinning unless told (BENCHMARKS.md,
    "Models sharing the cores"). Same kernels, same numbers. libgomp reads the setting when torch
    loads it, so this runs before anything imports torch."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    args = sys.argv[1:]
    command = next((a for a in args if not a.startswith("-")), None)
    if command in SHARED_CORE_COMMANDS:
        share_cores_politely()
    if command in MODEL_COMMANDS:
        reexec_with_tcmalloc(args)
    cli()


if __name__ == "__main__":
    main()
