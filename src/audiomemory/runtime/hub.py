"""Where Hugging Face weights come from: a local folder, or a hub id resolved through the HF cache.

Shared by the services whose models live on the Hugging Face hub (text encoder, generator,
transcriber); ``huggingface_hub`` is imported only when a hub id is resolved, so the core needs no
such dependency.

Resolving a hub id to its snapshot folder first means the same ``from_pretrained(folder,
local_files_only=True, use_safetensors=True)`` code loads real and tiny models, and the snapshot's
folder name is the commit hash — the revision ``Describe`` reports.

Pinning: a configured ``revision`` is used as given; without one, the commit ``PINNED`` names for the
model (where one could be verified). Otherwise the hub's ``main`` is mutable, so ``models pull``
records the commit it fetched in ``audiomemory-revisions.lock.json`` in the hub cache
(``{"commits": {model id: commit}}``) and every later resolve of that model loads that commit,
whatever ``main`` says by then.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from audiomemory.runtime.backend import offline
from audiomemory.runtime.errors import ModelUnavailable, shorten
from audiomemory.runtime.weights import WeightHash

REVISIONS_LOCK = "audiomemory-revisions.lock.json"
#: Commits of default models, where one could be checked against public code that pins it (a hub
#: branch is mutable). SD 1.5 has none here: its commit comes from the lock ``models pull`` writes.
PINNED = {
    "openai/whisper-large-v3-turbo": "41f01f3fe87f28c78e2fbf8b568835947dd65ed9",
}
T = TypeVar("T")


def hf_cache_dir() -> Path:
    """The HF hub cache as the environment says *now* (huggingface_hub freezes it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home) / "hub"


def _locked_commits() -> dict[str, str]:
    lock = hf_cache_dir() / REVISIONS_LOCK
    if not lock.is_file():
        return {}
    try:
        commits = json.loads(lock.read_text())["commits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"revisions lock {str(lock)!r} is unreadable ({type(exc).__name__}); "
                               "run `audiomemory models pull` again") from None
    if not isinstance(commits, dict) or not all(isinstance(v, str) for v in commits.values()):
        raise ModelUnavailable(f"revisions lock {str(lock)!r} is malformed; run `audiomemory models pull` again")
    return commits


def pinned_revision(model: str, revision: str | None) -> str | None:
    """``revision`` when configured, else the commit ``PINNED`` names for ``model``, else the one
    ``models pull`` recorded for it, else None (``main``)."""
    if revision is not None:
        return revision
    return PINNED.get(model) or _locked_commits().get(model)


def _record_commit(model: str, commit: str) -> None:
    commits = _locked_commits()
    commits[model] = commit
    lock = hf_cache_dir() / REVISIONS_LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"commits": dict(sorted(commits.items()))}, indent=1) + "\n")
    tmp.replace(lock)


def resolve_model_dir(
    model: str, revision: str | None, allow_patterns: Sequence[str], *, service: str
) -> tuple[Path, str]:
    """Return ``(folder, revision)`` for ``model``; fetch it into ``HF_HOME`` unless offline.

    A local folder's revision is a content hash of the files the loader reads (``allow_patterns``,
    or every file when none of them matches, e.g. a flat folder). A hub id loads ``revision``, or the
    commit ``models pull`` locked for it (``pinned_revision``).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path, content_hash(path, allow_patterns)
    from huggingface_hub import snapshot_download

    revision = pinned_revision(model, revision)
    try:
        folder = snapshot_download(model, revision=revision, allow_patterns=list(allow_patterns),
                                   cache_dir=hf_cache_dir(), local_files_only=offline())
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
    """Download ``model`` into the Hugging Face cache (no-op for a local folder) at ``revision`` (or the
    locked commit, or ``main`` the first time) and lock the commit it fetched."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(model, revision=pinned_revision(model, revision),
                                    allow_patterns=list(allow_patterns), cache_dir=hf_cache_dir()))
    if revision is None and model not in PINNED:
        _record_commit(model, folder.name)
    return folder


def content_hash(folder: Path, patterns: Sequence[str] = ()) -> str:
    """The revision of a local folder: ``WeightHash.add_folder`` over the files matching ``patterns``.

    Full content, not mtimes: two folders with the same weights get the same hash anywhere. Only
    files matching ``patterns`` count (a full SD checkout also holds fp16/EMA copies never loaded).
    """
    return WeightHash().add_folder(folder, patterns).revision()


def safetensors_only(service: str, folder: Path, load: Callable[[], T]) -> T:
    """``load()`` — a ``from_pretrained(..., use_safetensors=True)`` — with "no safetensors weights here"
    turned into one sentence: pickle-format ``.bin`` weights are never loaded, whatever the folder holds."""
    try:
        return load()
    except OSError as exc:  # transformers/diffusers: "does not appear to have a file named ..."
        raise ModelUnavailable(
            f"{service} model in {str(folder)!r} could not be loaded: {type(exc).__name__}: {shorten(exc)} "
            "(only safetensors weights are loaded; pickle-format .bin files are not)"
        ) from exc
