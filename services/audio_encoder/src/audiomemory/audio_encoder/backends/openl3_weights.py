"""OpenL3's weights: fetched pinned, checked against the lock, read as data.

torchopenl3 downloads ``torchopenl3_<repr>_<content>_<size>.pth.tar`` from its weights repository's
``master`` branch (mutable) through ``torch.hub.load_state_dict_from_url``, which unpickles it
without ``weights_only``. Here:

- the URL names the repository's commit (``WEIGHTS_COMMIT``), and a download is checked against the
  file's git blob id at that commit (``BLOB_IDS``) before it is kept;
- the file's sha256 goes into the lock beside it (``runtime.weights.LOCK_NAME``) when it is pulled
  (or, for a file put there by hand, at its first load: trust on first use), and every load checks it:
  a mismatch is refused naming both hashes;
- the bytes that were hashed are the bytes loaded, with ``torch.load(weights_only=True)``: a pickle
  that asks for anything but tensors and containers is refused.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import torch

from audiomemory.runtime.errors import ModelUnavailable, shorten
from audiomemory.runtime.weights import check_lock, record_lock, sha256_bytes

#: github.com/torchopenl3/torchopenl3-models at the head of ``master`` (2021-08-08; its last commit).
WEIGHTS_COMMIT = "a5df8fd155993e1601590b19649e882a68f80186"
WEIGHTS_URL = f"https://github.com/torchopenl3/torchopenl3-models/raw/{WEIGHTS_COMMIT}/"
#: Each file's git blob id (sha1 of ``blob <size>\0<bytes>``) in that commit's tree.
BLOB_IDS = {
    "torchopenl3_linear_env_512.pth.tar": "ce9cb6e656b872de5f3315e281bb6b8ea133fff9",
    "torchopenl3_linear_env_6144.pth.tar": "000c2632604a4098cf60a77fb3cfab5e813b2799",
    "torchopenl3_linear_music_512.pth.tar": "6fa23ef077d23b89977eae57e6e9915c3acd7d47",
    "torchopenl3_linear_music_6144.pth.tar": "633b411652562ac692b54618d0f1d27073ea570b",
    "torchopenl3_mel128_env_512.pth.tar": "0bd0f509b478fd015f5ff44fc260b3248d03307d",
    "torchopenl3_mel128_env_6144.pth.tar": "8b831761f02efefb33e75c22c46b87be4ba255ce",
    "torchopenl3_mel128_music_512.pth.tar": "d77ec1cde7dc0098f02277dd70040451eead8e64",
    "torchopenl3_mel128_music_6144.pth.tar": "622336b173c40fbeeba4da4b3ba3a1373ac53df9",
    "torchopenl3_mel256_env_512.pth.tar": "a37a08222ebf9d8a88a84beeae76ad909dac0bc6",
    "torchopenl3_mel256_env_6144.pth.tar": "49d8b06f66f77e3e21e9e4313114e69e0fddf82d",
    "torchopenl3_mel256_music_512.pth.tar": "54df87b6bfe9747d001991da436b3d1ac768b2a6",
    "torchopenl3_mel256_music_6144.pth.tar": "297b97fcf4216b3c4f43eb48d9242faaf99cd250",
}


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def download(path: Path) -> None:
    """Fetch ``path.name`` from the pinned commit, check its blob id, then keep it and lock its sha256."""
    expected = BLOB_IDS.get(path.name)
    if expected is None:
        raise ModelUnavailable(f"OpenL3 weights {path.name!r} are not among torchopenl3's published files")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        torch.hub.download_url_to_file(WEIGHTS_URL + path.name, str(partial), progress=False)
        data = partial.read_bytes()
        if git_blob_id(data) != expected:
            raise ModelUnavailable(f"OpenL3 weights {path.name!r} downloaded from {WEIGHTS_URL} have git blob id "
                                   f"{git_blob_id(data)}, not {expected} (the pinned commit's): refused")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    record_lock(path, sha256_bytes(data))


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """``(state dict, sha256)`` of the weights file, its sha256 checked against the lock first and the
    same bytes then read with ``torch.load(weights_only=True)``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelUnavailable(f"OpenL3 weights {str(path)!r} could not be read: {shorten(exc)}") from exc
    sha = sha256_bytes(data)
    check_lock(path, sha)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelUnavailable(f"OpenL3 weights {str(path)!r} are not plain weights (their pickle asks for more "
                               f"than tensors: {shorten(exc, 160)}); refused to load them") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise ModelUnavailable(f"OpenL3 weights {str(path)!r} could not be read: {shorten(exc)}") from exc
    if not isinstance(state, dict):
        raise ModelUnavailable(f"OpenL3 weights {str(path)!r} hold no state dict ({type(state).__name__})")
    return state, sha
