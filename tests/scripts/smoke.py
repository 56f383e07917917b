"""Running a ``make`` target's entry point in scripts/ in its smoke version: ``run_script(name, *args)`` runs
``scripts/NAME.py`` in a fresh process (offline) and returns the JSON object of its last stdout line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(name: str, *args: str, timeout: float = 240, env: dict[str, str] | None = None) -> dict[str, Any]:
    run = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), *args], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, check=False)
    assert run.returncode == 0, f"{name} exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result
