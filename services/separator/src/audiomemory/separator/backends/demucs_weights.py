"""Demucs weights read as data, never as code.

Demucs' own loaders run code chosen by the weights file: ``states.load_model`` and ``RemoteRepo``
call ``torch.load(weights_only=False)`` (a ``.th`` package is a pickle: a crafted one runs its
payload), and ``hf.load_safetensors_model`` imports and calls whatever ``module.Class`` the file's
metadata names with the metadata's arguments. Here every package is read as data first and only
then handed to Demucs' ``load_model`` (which takes the dict and builds the model):

- ``.th``: ``torch.load(weights_only=True)`` with exactly Demucs' model classes and
  ``fractions.Fraction`` (HTDemucs' ``segment``) on torch's safe-globals allow-list;
- ``.safetensors``: the class named in the metadata must be one of those model classes;
- either way the class must be a Demucs model class and the state plain tensors: quantised
  (DiffQ) packages are refused, as is anything else.

The repos are Demucs' own (``LocalRepo``'s scan and checksum-in-the-name check, ``BagOnlyRepo``'s
bag files, ``RemoteRepo``'s hash-named URLs, downloaded with ``check_hash``) with their one loading
call replaced.
"""

from __future__ import annotations

import json
import pickle
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from audiomemory.runtime.errors import ModelUnavailable, shorten


def model_classes() -> dict[str, type]:
    """The classes a Demucs package may name, by dotted name (``WDemucs`` is ``HDemucs``)."""
    from demucs.demucs import Demucs
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs

    return {f"{c.__module__}.{c.__qualname__}": c for c in (Demucs, HDemucs, HTDemucs)}


def not_weights(path: Path | str, why: str) -> ModelUnavailable:
    return ModelUnavailable(f"Demucs weights {str(path)!r} are not plain weights ({why}); refused to load them")


def build(package: Any, path: Path | str) -> Any:
    """Demucs' ``load_model`` on a package already read as data, after checking what it names."""
    from demucs.states import load_model

    if not isinstance(package, dict) or not {"klass", "args", "kwargs", "state"} <= package.keys():
        raise not_weights(path, "expected a Demucs package: a dict with klass, args, kwargs and state")
    if package["klass"] not in model_classes().values():
        raise not_weights(path, f"class {repr(package['klass'])[:80]} is not a Demucs model class")
    state = package["state"]
    if not isinstance(state, dict) or state.get("__quantized") or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise not_weights(path, "its state is not a plain mapping of names to tensors; quantised (DiffQ) "
                                "models are not supported")
    if not isinstance(package["args"], list | tuple) or not isinstance(package["kwargs"], dict):
        raise not_weights(path, "args must be a list and kwargs a mapping")
    return load_model({k: package[k] for k in ("klass", "args", "kwargs", "state")})


def read_th(path: Path) -> dict[str, Any]:
    """A ``.th`` package as data: ``torch.load(weights_only=True)`` with only Demucs' model classes and
    ``Fraction`` allowed; a pickle that names anything else (a payload) is refused naming the file."""
    try:
        with torch.serialization.safe_globals([*model_classes().values(), Fraction]):
            package = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise not_weights(path, f"its pickle asks for more than tensors: {shorten(exc, 160)}") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise ModelUnavailable(f"Demucs weights {str(path)!r} could not be read: {shorten(exc)}") from exc
    return package


def load_th(path: Path) -> Any:
    """The model in a ``.th`` package, read as data (``read_th``) and built by Demucs."""
    return build(read_th(path), path)


def load_safetensors(path: Path | str) -> Any:
    """``demucs.hf.load_safetensors_model`` with the metadata's class checked against the allow-list
    before anything is imported, and nested (quantised) states refused."""
    from demucs.hf import _decode_json
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
        klass = model_classes().get(metadata.get("klass", ""))
        if klass is None:
            raise not_weights(path, f"class {repr(metadata.get('klass'))[:80]} is not a Demucs model class")
        if "structure" in metadata:
            raise not_weights(path, "a nested (quantised, DiffQ) state; quantised models are not supported")
        state = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (safe_open is no mapping)
    try:
        args, kwargs = _decode_json(json.loads(metadata["args"])), _decode_json(json.loads(metadata["kwargs"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise not_weights(path, f"unreadable args/kwargs metadata: {shorten(exc, 80)}") from None
    return build({"klass": klass, "args": args, "kwargs": kwargs, "state": state}, path)


def safe_repos() -> tuple[type, type]:
    """Demucs' ``LocalRepo`` and ``RemoteRepo`` with their loading call replaced by the safe one."""
    from demucs.repo import LocalRepo, ModelLoadingError, RemoteRepo, check_checksum

    class SafeLocalRepo(LocalRepo):
        def get_model(self, sig: str) -> Any:
            if sig not in self._models:
                raise ModelLoadingError(f"Could not find pre-trained model with signature {sig}.")
            if sig in self._checksums:
                check_checksum(self._models[sig], self._checksums[sig])
            return load_th(Path(self._models[sig]))

    class SafeRemoteRepo(RemoteRepo):
        def get_model(self, sig: str) -> Any:
            if sig not in self._models:
                raise ModelLoadingError(f"Could not find a pre-trained model with signature {sig}.")
            url = self._models[sig]
            # Hash-named files: torch.hub checks the sha256 prefix in the name when it downloads.
            with torch.serialization.safe_globals([*model_classes().values(), Fraction]):
                try:
                    package = torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True,
                                                                 weights_only=True)
                except pickle.UnpicklingError as exc:
                    raise not_weights(url, f"its pickle asks for more than tensors: {shorten(exc, 160)}") from None
            return build(package, url)

    return SafeLocalRepo, SafeRemoteRepo


def remote_repo() -> Any:
    """Demucs' legacy remote repo (hash-named ``.th`` files, ``remote/files.txt``), read as data."""
    from demucs.pretrained import REMOTE_ROOT, _parse_remote_files
    from demucs.repo import AnyModelRepo, BagOnlyRepo

    remote = safe_repos()[1](_parse_remote_files(REMOTE_ROOT / "files.txt"))
    return AnyModelRepo(remote, BagOnlyRepo(REMOTE_ROOT, remote))
