"""The ``demucs`` separator backend, on the ``demucs`` package (4.1.0).

Loading goes through Demucs' own loaders, wrapped where they misbehave for a server:

- ``get_model`` calls ``sys.exit`` on some load errors (``fatal``): caught, raised as ``ModelUnavailable``.
- Demucs' loaders unpickle ``.th`` files with ``weights_only=False`` and import whatever class a
  safetensors file names: every file is read as data by ``demucs_weights`` (allow-listed model
  classes, ``weights_only=True``) and only then built by Demucs' ``load_model``.
- ``get_model(name)`` without a repo asks the Hugging Face hub (its mutable ``main``) first and then
  retries a legacy download for ~25 s when offline. We look in the local caches first (the HF hub
  cache, then ``$TORCH_HOME/hub/checkpoints``); only when the weights are absent do we go to the
  network, after a 2-second reachability probe, and then for Demucs' legacy hash-named ``.th`` files
  (immutable: torch.hub checks the sha256 prefix in each name), so offline failure is quick and
  names the model and the two ways out.
- ``separate_tensor`` normalises the caller's tensor in place and divides by zero on silence; we
  normalise our own copy at the model's rate (or an array the caller donated) safely, in place.
- ``apply_model`` holds the whole song's output until the end; ``separate_blocks`` runs the same
  segments through ``overlap.bag_stretches`` and yields each stretch as soon as it is final.
- Demucs checks inputs with ``assert``; we validate before calling it and raise ``InvalidInput``.

Resampling to the model's rate uses soxr; mono is duplicated to stereo (the model's channels).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import yaml

from audiomemory.runtime.audio import check_audio
from audiomemory.runtime.backend import HOW_TO_GET, ModelInfo, download_blocked, offline, resolve_device
from audiomemory.runtime.codec import numpy_to_torch
from audiomemory.runtime.errors import Cancelled, FailedPrecondition, ModelUnavailable, shorten
from audiomemory.runtime.hub import hf_cache_dir
from audiomemory.runtime.weights import WeightHash
from audiomemory.separator.audio import assemble
from audiomemory.separator.backends import CancelCheck, SeparatorBackend, StemBlock
from audiomemory.separator.backends.demucs_weights import load_safetensors, remote_repo, safe_repos
from audiomemory.separator.backends.numerics import normalise_, resolve_precision
from audiomemory.separator.backends.overlap import bag_stretches

if TYPE_CHECKING:
    from demucs.apply import BagOfModels

    from audiomemory.separator.config import SeparatorConfig

log = logging.getLogger(__name__)

# The tiny profile: same class as htdemucs (HTDemucs, 4 sources, 44.1 kHz stereo), few channels and
# a short segment so 2 s of audio separates in ~0.1-0.3 s on a laptop core.
TINY_NAME = "tiny"
TINY_KWARGS: dict[str, Any] = {
    "sources": ["drums", "bass", "other", "vocals"],
    "audio_channels": 2,
    "samplerate": 44100,
    "segment": Fraction(2),
    "channels": 4,
    "depth": 4,
    "nfft": 4096,
    "t_layers": 1,
    "t_heads": 2,
    "t_hidden_scale": 1.0,
    "dconv_comp": 2,
}
# The published htdemucs architecture (42.0 M parameters; the checkpoint 955717e8 stores them as
# float16, 80 MiB): for benchmarks with random weights and the same compute as the real model.
HTDEMUCS_KWARGS: dict[str, Any] = {
    "sources": ["drums", "bass", "other", "vocals"],
    "audio_channels": 2,
    "samplerate": 44100,
    "segment": Fraction(39, 5),
    "channels": 48,
    "depth": 4,
    "dconv_mode": 3,
    "t_layers": 5,
    "bottom_channels": 512,
}


def write_repo(repo: Path, name: str, kwargs: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """A random-weight HTDemucs(**kwargs) as bag ``name`` in the Demucs local repo ``repo``: ``<name>.yaml``
    naming one signature stored as ``<name>sig-<sha256[:8]>.th`` (Demucs' own package and checksum layout).
    Returns the config overrides that select it."""
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state, save_with_checksum

    signature = f"{name.replace('-', '').replace('_', '')}sig"
    repo.mkdir(parents=True, exist_ok=True)
    for old in repo.glob(f"{signature}*.th"):
        old.unlink()  # LocalRepo refuses two files for one signature
    rng = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = HTDemucs(**kwargs)
    finally:
        torch.random.set_rng_state(rng)
    package = {"klass": HTDemucs, "args": [], "kwargs": dict(kwargs), "state": get_state(model, None)}
    save_with_checksum(package, repo / f"{signature}.th")
    (repo / f"{name}.yaml").write_text(yaml.safe_dump({"models": [signature]}))
    return {"model": name, "repo": str(repo)}


def content_hash(models: list[torch.nn.Module]) -> str:
    """The revision of loaded models: ``WeightHash`` over every state-dict tensor, in key order."""
    weights = WeightHash()
    for model in models:
        weights.add_tensors(sorted(model.state_dict().items()))
    return weights.revision()


def _load_from_hf_cache(name: str) -> BagOfModels | None:
    """The bag ``name`` from the local HF hub cache (``load_safetensors``: Demucs' loader, class checked), or None."""
    from demucs.apply import BagOfModels
    from demucs.hf import DEFAULT_NAMESPACE, hf_repo_name
    from huggingface_hub import try_to_load_from_cache

    namespace, short = name.split("/", 1) if "/" in name else (DEFAULT_NAMESPACE, name)
    repo_id = f"{namespace}/{hf_repo_name(short)}"
    cache = str(hf_cache_dir())
    bag_file = try_to_load_from_cache(repo_id, f"{short}.yaml", cache_dir=cache)
    if not isinstance(bag_file, str):
        return None
    bag = yaml.safe_load(Path(bag_file).read_text())
    files = [try_to_load_from_cache(repo_id, f"{sig}.safetensors", cache_dir=cache) for sig in bag["models"]]
    if not all(isinstance(f, str) for f in files):
        return None
    models = [load_safetensors(str(f)) for f in files]
    return BagOfModels(models, bag.get("weights"), bag.get("segment"))


def _load_from_torch_cache(name: str) -> Any | None:
    """The model ``name`` from the legacy download cache (``$TORCH_HOME/hub/checkpoints``), or None."""
    from demucs.pretrained import REMOTE_ROOT, _parse_remote_files

    urls = _parse_remote_files(REMOTE_ROOT / "files.txt")
    bag_file = REMOTE_ROOT / f"{name}.yaml"
    if name in urls:
        sigs = [name]
    elif bag_file.is_file():
        sigs = list(yaml.safe_load(bag_file.read_text())["models"])
    else:
        return None
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if not all(sig in urls and (checkpoints / urls[sig].rsplit("/", 1)[-1]).is_file() for sig in sigs):
        return None
    return remote_repo().get_model(name)  # every file is on disk: torch.hub reads it without the network


@contextlib.contextmanager
def _demucs_errors(what: str) -> Iterator[None]:
    """Turn Demucs' ``sys.exit`` and loading errors into ``ModelUnavailable``."""
    from demucs.repo import ModelLoadingError

    try:
        yield
    except SystemExit as exc:  # demucs.utils.fatal prints to stderr, then exits the process
        raise ModelUnavailable(f"{what}: Demucs refused to load it (it tried to exit with {exc.code!r})") from None
    except (ModelLoadingError, OSError, KeyError, ValueError) as exc:
        raise ModelUnavailable(f"{what}: {type(exc).__name__}: {shorten(exc)}") from exc


class DemucsBackend(SeparatorBackend):
    """Demucs (HTDemucs by default) applied segment by segment with overlap, optional shifts."""

    name: ClassVar[str] = "demucs"
    config: SeparatorConfig

    def __init__(self, config: SeparatorConfig) -> None:
        super().__init__(config)
        self._bag: BagOfModels | None = None
        self._device = torch.device("cpu")
        self._revision = ""
        self._source = ""
        self._precision_name = "float32"

    # -- loading -------------------------------------------------------------------------------
    def load(self) -> None:
        from demucs.apply import BagOfModels

        name = self.config.model
        started = time.perf_counter()
        model = self._load_repo(name) if self.config.repo is not None else self._load_pretrained(name)
        bag = model if isinstance(model, BagOfModels) else BagOfModels([model])
        segment = self.config.segment
        if segment is not None and segment > bag.max_allowed_segment:
            raise FailedPrecondition(
                f"segment: {segment} s is longer than model {name!r} allows ({float(bag.max_allowed_segment)} s)"
            )
        self._device = resolve_device(self.config.device)
        self._precision_name = resolve_precision(self.config.precision, self._device)
        # Keep the whole bag on the device: apply_model moves each sub-model to the device and back
        # to where it was, which would be a copy per call otherwise.
        bag.to(self._device).eval()
        self._revision = content_hash(list(bag.models))
        self._bag = bag
        log.info("demucs model %r loaded from %s in %.1f s", name, self._source, time.perf_counter() - started)

    def _load_repo(self, name: str) -> Any:
        repo = Path(self.config.repo or "")
        if not repo.is_dir():
            raise ModelUnavailable(f"Demucs model {name!r}: repo {str(repo)!r} is not a directory; {HOW_TO_GET}")
        from demucs.repo import AnyModelRepo, BagOnlyRepo

        with _demucs_errors(f"Demucs model {name!r} in repo {str(repo)!r}"):
            local = safe_repos()[0](repo)
            known = AnyModelRepo(local, BagOnlyRepo(repo, local))
            if not known.has_model(name):
                listed = ", ".join(sorted(known.list_model())) or "none"
                raise ModelUnavailable(
                    f"Demucs model {name!r} is not in repo {str(repo)!r} (it holds: {listed}); {HOW_TO_GET}"
                )
            self._source = f"local repo {repo}"
            return known.get_model(name).eval()

    def _load_pretrained(self, name: str) -> Any:
        what = f"Demucs model {name!r}"
        with _demucs_errors(what):
            model = _load_from_hf_cache(name)
            if model is not None:
                self._source = "the Hugging Face cache"
                return model
            model = _load_from_torch_cache(name)
            if model is not None:
                self._source = "the torch hub cache"
                return model
        from demucs.pretrained import ROOT_URL

        reason = download_blocked(ROOT_URL)
        if reason is not None:
            raise ModelUnavailable(
                f"{what} is not in the local caches ({hf_cache_dir()}, {torch.hub.get_dir()}/checkpoints) "
                f"and cannot be downloaded ({reason}); {HOW_TO_GET}"
            )
        with _demucs_errors(what):
            self._source = "a download"
            return remote_repo().get_model(name)

    @classmethod
    def pull(cls, config: SeparatorConfig) -> None:  # type: ignore[override]
        """Download ``config.model``'s hash-named ``.th`` files (Demucs' legacy remote repo, sha256 prefix
        checked) into the torch hub cache, and prove they load as plain weights."""
        if config.repo is not None:
            cls(config).load()  # a local repo has nothing to fetch; prove it loads
            return
        if offline():
            raise ModelUnavailable(f"Demucs model {config.model!r}: cannot pull while HF_HUB_OFFLINE is set")
        with _demucs_errors(f"Demucs model {config.model!r}"):
            remote_repo().get_model(config.model)

    @classmethod
    def write_tiny(cls, root: Path) -> dict[str, Any]:
        """The tiny profile: a random-weight HTDemucs (TINY_KWARGS) as the Demucs local repo
        ``root/demucs`` holding bag ``tiny``; returns ``{"model": "tiny", "repo": "<root>/demucs"}``."""
        return write_repo(Path(root) / "demucs", TINY_NAME, TINY_KWARGS)

    # -- facts ---------------------------------------------------------------------------------
    def _loaded(self) -> BagOfModels:
        if self._bag is None:
            raise FailedPrecondition("separator: the model is not loaded yet")
        return self._bag

    @property
    def stems(self) -> tuple[str, ...]:
        return tuple(self._loaded().sources)

    @property
    def sample_rate(self) -> int:
        return int(self._loaded().samplerate)

    @property
    def channels(self) -> int:
        return int(self._loaded().audio_channels)

    def describe(self) -> ModelInfo:
        bag = self._loaded()
        first = bag.models[0]
        segment = self.config.segment if self.config.segment is not None else float(bag.max_allowed_segment)
        return ModelInfo(
            backend=self.name,
            model_id=self.config.model,
            revision=self._revision,
            device=str(self._device),
            # The arithmetic, not the stored weights: bfloat16 autocast changes the numbers (cache key).
            dtype=self._precision_name if self._precision_name != "float32"
            else str(next(first.parameters()).dtype).removeprefix("torch."),
            extra={
                "class": type(first).__name__,
                "models_in_bag": str(len(bag.models)),
                "stems": ",".join(bag.sources),
                "sample_rate": str(bag.samplerate),
                "channels": str(bag.audio_channels),
                "segment": f"{float(segment):g}",
                "overlap": f"{self.config.overlap:g}",
                "shifts": str(self.config.shifts),
                "precision": self._precision_name if self._precision_name == "float32" else "bfloat16-autocast",
                "source": self._source,
            },
        )

    # -- the verb ------------------------------------------------------------------------------
    def _model_input(self, audio: np.ndarray, sample_rate: int, donate: bool) -> torch.Tensor:
        """float32 ``[channels, frames]`` at the model's rate in memory of our own (the caller's array
        itself when donated and already in that form), ready to normalise in place."""
        rate, channels = self.sample_rate, self.channels
        if donate and audio.flags.writeable and sample_rate == rate and audio.shape[0] == channels:
            return numpy_to_torch(audio)
        return numpy_to_torch(assemble(audio, sample_rate, rate, channels))

    def separate_blocks(
        self, audio: np.ndarray, sample_rate: int, *, cancelled: CancelCheck | None = None, donate: bool = False
    ) -> Iterator[StemBlock]:
        """Demucs' ``apply_model(bag, mix, split=True, shifts=0, overlap, segment)`` block by block (see
        ``overlap.py``): the same numbers, with ~one segment of output held instead of the whole song's.
        With ``shifts > 0`` (random time shifts over the whole song) it falls back to the whole-song
        ``apply_model`` and yields one block. Cancellation is checked before every model call."""
        from demucs.apply import apply_model

        bag = self._loaded()
        check_audio(audio, sample_rate)
        mix = self._model_input(audio, sample_rate, donate)
        mean, scale = normalise_(mix)

        def run(model: Any, chunk: Any) -> torch.Tensor:
            if cancelled is not None and cancelled():
                raise Cancelled("separate: the caller cancelled the request")
            with self._precision():
                out: torch.Tensor = apply_model(model, chunk, shifts=0, split=False, overlap=self.config.overlap,
                                                progress=False, device=self._device, segment=self.config.segment)
            return out

        if self.config.shifts:
            stretches = self._whole(bag, mix, cancelled)
        else:
            stretches = bag_stretches(bag, mix[None], run, segment=self.config.segment,
                                      overlap=self.config.overlap, device=self._device)
        while True:
            # Inference mode around the work only, never across a yield (it is the consumer's thread state).
            with torch.inference_mode():
                item = next(stretches, None)
                if item is None:
                    return
                start, out = item
                out = out[0].mul_(scale).add_(mean)  # undo the normalisation
                block = out.to("cpu", torch.float32).numpy()
            yield StemBlock(start=start, audio=block)

    def _whole(self, bag: BagOfModels, mix: torch.Tensor, cancelled: CancelCheck | None
               ) -> Iterator[tuple[int, torch.Tensor]]:
        """Random shifts move every segment boundary per shift: the whole-song ``apply_model``, one block."""
        from demucs.apply import apply_model

        with self._precision():
            yield 0, apply_model(bag, mix[None], shifts=self.config.shifts, split=True, overlap=self.config.overlap,
                                 progress=False, device=self._device, segment=self.config.segment,
                                 callback=self._callback(cancelled))

    @staticmethod
    def _callback(cancelled: CancelCheck | None) -> Callable[[dict[str, Any]], None] | None:
        if cancelled is None:
            return None

        def callback(_: dict[str, Any]) -> None:
            if cancelled():
                raise Cancelled("separate: the caller cancelled the request")

        return callback

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        if self._precision_name == "bfloat16":
            return torch.autocast(self._device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
