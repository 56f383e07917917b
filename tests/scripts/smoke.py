"""Running a ``make`` target's entry point in scripts/ in its smoke version: ``run_script(name, *args)`` runs
``scripts/NAME.py`` as ``__main__`` with those arguments and returns the JSON object of its last stdout line.

It runs in this process (``runpy``, ``sys.argv`` set, stdout captured): the script file and its ``main`` are the
ones ``make`` runs, without a fresh interpreter importing torch and the model libraries again for every script
(seconds each). What a script starts as processes of its own (service replicas, allocator workers, memory probes)
still runs as processes. The offline switches are the suite's (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(name: str, *args: str) -> dict[str, Any]:
    script = SCRIPTS / f"{name}.py"
    out, saved_argv, saved_env, code = io.StringIO(), sys.argv, dict(os.environ), None
    sys.argv = [str(script), *args]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = saved_argv
        os.environ.clear()  # a script's os.environ.setdefault (GRPC_VERBOSITY) stays its own
        os.environ.update(saved_env)
    printed = out.getvalue()
    assert code in (None, 0), f"{name} exited {code}:\n{printed[-3000:]}"
    result: dict[str, Any] = json.loads(printed.strip().splitlines()[-1])
    return result
