"""Where Hugging Face weights come from: a local folder, or a hub id resolved through the HF cache.

Shared by the services whose models live on the Hugging Face hub (text encoder, generator);
``huggingface_hub`` is imported only when a hub id is resolved, so the core needs no such dependency.

Resolving a hub id to its snapshot folder first means the same ``from_pretrained(folder,
local_files_only=True)`` code loads real and tiny models, and the snapshot's folder name is the
commit hash — the revision ``Describe`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from audiomemory.runtime.backend import offline
from audiomemory.runtime.errors import ModelUnavailable
from audiomemory.runtime.weights import WeightHash


def resolve_model_dir(
    model: str, revision: str | None, allow_patterns: Sequence[str], *, service: str
) -> tuple[Path, str]:
    """Return ``(folder, revision)`` for ``model``; fetch it into ``HF_HOME`` unless offline.

    A local folder's revision is a content hash of the files the loader reads (``allow_patterns``,
    or every file when none of them matches, e.g. a flat folder).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path, content_hash(path, allow_patterns)
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            model, revision=revision, allow_patterns=list(allow_patterns), local_files_only=offline()
        )
    except Exception as exc:  # network down, repo missing, gated: one clear sentence either way
        raise ModelUnavailable(
            f"{service} model {model!r} (revision {revision or 'main'}) is not in the Hugging Face cache "
            f"and could not be downloaded ({type(exc).__name__}). Either run `audiomemory models pull "
            f"--only {service}` where the network is reachable (or mount a cache at HF_HOME), or set "
            f"AUDIOMEMORY_{service.upper()}_MODEL to a local folder (e.g. one written by "
            f"`audiomemory models make-tiny`; `--models tiny` does that for you)."
        ) from exc
    return Path(folder), Path(folder).name


def pull_model(model: str, revision: str | None, allow_patterns: Sequence[str]) -> Path:
    """Download ``model`` into the Hugging Face cache (no-op for a local folder)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, revision=revision, allow_patterns=list(allow_patterns)))


def content_hash(folder: Path, patterns: Sequence[str] = ()) -> str:
    """The revision of a local folder: ``WeightHash.add_folder`` over the files matching ``patterns``.

    Full content, not mtimes: two folders with the same weights get the same hash anywhere. Only
    files matching ``patterns`` count (a full SD checkout also holds fp16/EMA copies never loaded).
    """
    return WeightHash().add_folder(folder, patterns).revision()
