"""The ``openvino`` separator backend: the ``demucs`` backend with each HTDemucs' network run by OpenVINO's CPU
runtime.

Everything but the network is the ``demucs`` backend's (loading and its weight checks, the normalisation, the
segments and their overlap, cancellation before every model call, the stems' order). Of HTDemucs' forward pass
the STFT and the masking/iSTFT stay in torch (OpenVINO's converter has no complex tensors at ``aten::pad``: the
whole model does not convert); what lies between — both encoders, the cross-transformer, both decoders — is
traced at the model's one *static* segment (1 × channels × the training length: Demucs pads every call to it),
converted to OpenVINO IR once, kept in the compiled-model cache (``runtime/compiled.py``, keyed by the bag's
revision, the runtime versions and the shape) and compiled for the CPU. A call of another shape (a batch, a
segment set longer than the model's) runs the torch model as ``demucs`` does.

Precision: OpenVINO's f32 for ``auto`` and ``float32`` (on every CPU until OpenVINO's bf16 htdemucs is measured
against the stems rule), bf16 when ``bfloat16`` is asked for. Stems: ≥ 100 dB SNR against eager float32 (full
size, random weights; BENCHMARKS.md), tested ≥ 30 dB on the tiny model.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, ClassVar

import numpy as np
import torch

from audiomemory.runtime import compiled as ovcache
from audiomemory.runtime.backend import ModelInfo
from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.separator.backends.demucs import DemucsBackend

log = logging.getLogger(__name__)

#: OpenVINO's inference precision for each precision setting (``auto``: f32, see the module's docstring).
OV_PRECISION = {"auto": "f32", "float32": "f32", "bfloat16": "bf16"}
#: The methods of HTDemucs' forward that stay in torch (complex tensors), replaced while tracing the rest.
EDGES = ("_spec", "_magnitude", "_mask", "_ispec")


class _Between(torch.nn.Module):
    """HTDemucs' forward between its spectrogram and its masking, as ``convert_model`` traces it: (the padded
    mix, the magnitude spectrogram) in; (the time branch's stems, the spectral branch's masks) out."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, mix: torch.Tensor, magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept: dict[str, torch.Tensor] = {}

        def keep(z: Any, x: torch.Tensor) -> torch.Tensor:
            kept["masks"] = x
            return x

        replaced = {"_spec": lambda mix: None, "_magnitude": lambda z: magnitude, "_mask": keep,
                    "_ispec": lambda z, length: torch.zeros((), dtype=mix.dtype)}
        self.model.__dict__.update(replaced)
        try:
            time_branch = self.model.forward(mix)  # its stems + the iSTFT's zero
        finally:
            for name in EDGES:
                self.model.__dict__.pop(name, None)
        return time_branch, kept["masks"]


class CompiledHTDemucs:
    """What replaces one HTDemucs' ``forward``: its network compiled by OpenVINO, its STFT edges in torch."""

    def __init__(self, model: Any, compiled: Any) -> None:
        self.model = model
        self.eager = model.forward  # the bound method: calls of another shape
        self.compiled = compiled
        self.length = int(model.segment * model.samplerate)

    def __call__(self, mix: torch.Tensor) -> torch.Tensor:
        model, frames = self.model, mix.shape[-1]
        if model.training or mix.shape[0] != 1 or frames > self.length \
                or int(model.segment * model.samplerate) != self.length:
            return self.eager(mix)
        if frames < self.length:
            mix = torch.nn.functional.pad(mix, (0, self.length - frames))
        mix = mix.float()
        z = model._spec(mix)
        magnitude = model._magnitude(z)
        request = self.compiled.create_infer_request()  # one a call: concurrent calls never share one
        out = request.infer({0: mix.numpy(), 1: np.ascontiguousarray(magnitude.numpy())})
        time_branch, masks = torch.from_numpy(np.array(out[0])), torch.from_numpy(np.array(out[1]))
        spectral = model._ispec(model._mask(z, masks), self.length)
        return (time_branch + spectral)[..., :frames]


class OpenVINODemucsBackend(DemucsBackend):
    """Demucs with each HTDemucs' network compiled by OpenVINO (CPU); everything else as ``demucs``."""

    name: ClassVar[str] = "openvino"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.compiled_models = 0
        self.timings: dict[str, float] = {"convert_s": 0.0, "compile_s": 0.0}

    def load(self) -> None:
        from demucs.htdemucs import HTDemucs

        if self.config.device not in ("cpu", "auto"):
            raise FailedPrecondition(f"device: the openvino separator runs on the CPU, got {self.config.device!r}")
        self.config = self.config.model_copy(update={"device": "cpu"})
        super().load()
        self._precision_name = "float32"  # the torch edges; OpenVINO's own precision is OV_PRECISION's
        bag = self._loaded()
        folder = ovcache.cache_folder(self.config.compiled_cache, self._revision, "demucs")
        writable = ovcache.writable(folder)
        compile_graph = ovcache.cpu_compiler(folder, writable, OV_PRECISION[self.config.precision],
                                             torch.get_num_threads())
        for index, model in enumerate(bag.models):
            if isinstance(model, HTDemucs) and model.use_train_segment:
                length = int(model.segment * model.samplerate)
                graph = ovcache.graph_for(folder / f"htdemucs-{index}-{model.audio_channels}x{length}.xml",
                                          functools.partial(self._convert, model, length), writable)
                started = time.perf_counter()
                model.forward = CompiledHTDemucs(model, compile_graph(graph))
                self.timings["compile_s"] += time.perf_counter() - started
                self.compiled_models += 1
        log.info("openvino separator: %d of %d models compiled (converted in %.1f s, compiled in %.1f s; cache %s)",
                 self.compiled_models, len(bag.models), self.timings["convert_s"], self.timings["compile_s"], folder)

    def _convert(self, model: Any, length: int) -> Any:
        import openvino

        started = time.perf_counter()
        mix = torch.zeros(1, model.audio_channels, length)
        with torch.no_grad():
            example = (mix, model._magnitude(model._spec(mix)))
            traced = torch.jit.trace(_Between(model), example, check_trace=False)
            graph = openvino.convert_model(traced, example_input=example)
        self.timings["convert_s"] += time.perf_counter() - started
        return graph

    @classmethod
    def pull(cls, config: Any) -> None:
        """Fetch the weights, then convert each HTDemucs into the cache (``models pull``: the volume's writer)."""
        super().pull(config)
        cls(config).load()

    def _precision(self) -> Any:
        import contextlib

        return contextlib.nullcontext()  # no autocast around the torch edges: OpenVINO has the model

    def describe(self) -> ModelInfo:
        import openvino

        info = super().describe()
        info.dtype = {"f32": "float32", "bf16": "bfloat16"}[OV_PRECISION[self.config.precision]]
        info.extra["precision"] = info.dtype
        info.extra["runtime"] = f"openvino {openvino.get_version().split('-')[0]}"
        info.extra["compiled_models"] = str(self.compiled_models)
        return info
