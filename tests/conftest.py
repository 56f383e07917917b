"""Suite-wide settings: never touch the network, tiny models written once per session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


from audiomemory.profiles import write_tiny_for  # after the offline switches above

TinyOverrides = Callable[[str], dict[str, Any]]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyOverrides:
    """``tiny(kind)`` → config overrides selecting that service's tiny random-weight model (written once)."""
    root = tmp_path_factory.mktemp("tiny-models")
    written: dict[str, dict[str, Any]] = {}

    def get(kind: str) -> dict[str, Any]:
        if kind not in written:
            written[kind] = write_tiny_for(kind, Path(root) / kind)
        return dict(written[kind])

    return get
