"""What every ``make bench-*`` script shares: naming the machine and printing progress."""

from __future__ import annotations

import platform
import subprocess
import sys
import time


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` reports it (figures in BENCHMARKS.md name their machine)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def progress(message: str) -> None:
    """A timestamped line on stderr, so stdout keeps only the table and the final JSON."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
