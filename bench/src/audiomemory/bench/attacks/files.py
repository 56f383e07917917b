"""The suite's file-borne attack: a shared bundle whose image names a profile
that would load a pickle (``audiomemory reproduce`` must refuse the profile, so the pickle never runs)."""

from __future__ import annotations

import builtins
import hashlib
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from audiomemory.bench.attacks.stack import wav
from audiomemory.bench.hostile_png import GOOD, png


class _Payload:
    """Unpickled, creates ``path``: what a hostile ``.th`` would do (with worse than an empty file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return builtins.open, (str(self.path), "w")


def file_borne(work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Reproduce, as a bundle's README would say, an image whose record names ``bundle.yaml`` beside it."""
    bundle, marker, control = work / "bundle", work / "PAYLOAD-RAN", work / "CONTROL-PAYLOAD-RAN"
    repo = bundle / "demucs-repo"
    repo.mkdir(parents=True)
    (repo / "payload.th").write_bytes(pickle.dumps(_Payload(marker)))
    (bundle / "bundle.yaml").write_text(yaml.safe_dump({"separator": {"model": "payload", "repo": str(repo)}}))
    song = wav()
    (bundle / "song.wav").write_bytes(song)
    record = {**GOOD, "song": {"sha256": hashlib.sha256(song).hexdigest(), "filename": "song.wav"},
              "profile": "bundle.yaml"}
    (bundle / "shared.png").write_bytes(png(record))
    # The control: the same pickle, loaded as Demucs loaded its weights before (weights_only=False), runs.
    (work / "control.th").write_bytes(pickle.dumps(_Payload(control)))
    subprocess.run([sys.executable, "-c", "import sys, torch; torch.load(sys.argv[1], weights_only=False)",
                    str(work / "control.th")], capture_output=True, timeout=120, check=False)
    run = subprocess.run([sys.executable, "-m", "audiomemory.cli.main", "reproduce", "shared.png", "--song",
                          "song.wav"], cwd=bundle, env=env, capture_output=True, text=True, timeout=600, check=False)
    said = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    return {"payload_live": control.exists(), "reproduce_exit": run.returncode,
            "reproduce_said": said[-1][:200] if said else "", "marker_exists": marker.exists(),
            "as_expected": control.exists() and run.returncode != 0 and not marker.exists()
            and "--models" in (said[-1] if said else "")}
