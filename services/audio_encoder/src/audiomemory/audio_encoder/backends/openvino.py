"""The ``openvino`` audio encoder backend: the ``openl3`` backend with OpenL3's CNN run by OpenVINO's CPU runtime.

Everything but the CNN is the ``openl3`` backend's (weights and their checks, framing, the hop rule, the float32
spectrogram front end, the final pooling). The CNN — input norm to the last convolution, ``cnn_layers`` — is
converted once with a dynamic batch, kept as OpenVINO IR in the compiled-model cache (``runtime/compiled.py``:
keyed by the weights' revision, the runtime versions and the input's shape; ``models pull`` converts it) and
compiled for the CPU.

Precision: OpenVINO's f32 for ``auto`` and ``float32`` — the same numbers as the float32 CNN to rounding
(measured 1.7e-6 relative RMS on the full-size CNN) — bf16 for ``bfloat16``; ``int8`` is the ``openl3``
backend's (PyTorch's quantisation) and is refused here, naming the setting.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from audiomemory.audio_encoder.backends.openl3 import WINDOW, OpenL3Backend, cnn_layers, window_spectrograms
from audiomemory.runtime import compiled as ovcache
from audiomemory.runtime.backend import ModelInfo
from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.runtime.weights import revision

log = logging.getLogger(__name__)

#: OpenVINO's inference precision for each precision setting this backend runs.
OV_PRECISION = {"auto": "f32", "float32": "f32", "bfloat16": "bf16"}


class CompiledCNN(nn.Module):
    """OpenL3's CNN compiled by OpenVINO, where ``lean_forward`` takes a replacement CNN (spectrograms in)."""

    def __init__(self, compiled: Any) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        request = self.compiled.create_infer_request()  # one a call: concurrent calls never share one
        out = request.infer({0: np.ascontiguousarray(spectrograms.float().cpu().numpy())})[0]
        return torch.from_numpy(np.array(out))


class OpenVINOOpenL3Backend(OpenL3Backend):
    """OpenL3 with its CNN compiled by OpenVINO (CPU); everything else as ``openl3``."""

    name: ClassVar[str] = "openvino"

    def __init__(self, config: Any) -> None:
        if config.precision not in OV_PRECISION:
            raise FailedPrecondition(f"precision: the openvino audio encoder runs {', '.join(OV_PRECISION)}, got "
                                     f"{config.precision!r} (int8 is the openl3 backend's)")
        if config.device not in ("cpu", "auto"):
            raise FailedPrecondition(f"device: the openvino audio encoder runs on the CPU, got {config.device!r}")
        self.ov_precision = OV_PRECISION[config.precision]
        # the torch side (spectrograms, pooling, the load's checks) in float32 on the CPU
        super().__init__(config.model_copy(update={"precision": "float32", "device": "cpu"}))
        self.timings: dict[str, float] = {"convert_s": 0.0, "compile_s": 0.0}

    def load(self) -> None:
        super().load()
        model = self._loaded()
        example = window_spectrograms(model, np.zeros((2, WINDOW), np.float32))
        shape = "x".join(str(d) for d in example.shape[1:])
        folder = ovcache.cache_folder(self.config.compiled_cache, revision(self._sha), "torchopenl3")
        writable = ovcache.writable(folder)
        compile_graph = ovcache.cpu_compiler(folder, writable, self.ov_precision, torch.get_num_threads())
        graph = ovcache.graph_for(folder / f"openl3-cnn-{shape}.xml", lambda: self._convert(model, example), writable)
        started = time.perf_counter()
        self._quantised = CompiledCNN(compile_graph(graph))
        self.timings["compile_s"] = time.perf_counter() - started
        log.info("openvino OpenL3 CNN ready (%s; converted in %.1f s, compiled in %.1f s; cache %s)",
                 self.ov_precision, self.timings["convert_s"], self.timings["compile_s"], folder)

    def _convert(self, model: Any, example: torch.Tensor) -> Any:
        import openvino

        started = time.perf_counter()
        with torch.no_grad():
            graph = openvino.convert_model(cnn_layers(model), example_input=example,
                                           input=[openvino.PartialShape([-1, *example.shape[1:]])])
        self.timings["convert_s"] += time.perf_counter() - started
        return graph

    @property
    def precision(self) -> str:
        return {"f32": "float32", "bf16": "bfloat16"}[self.ov_precision]

    def describe(self) -> ModelInfo:
        import openvino

        info = super().describe()
        info.extra["runtime"] = f"openvino {openvino.get_version().split('-')[0]}"
        return info

    @classmethod
    def pull(cls, config: Any) -> None:
        """Fetch the weights, then convert the CNN into the cache (``models pull``: the volume's writer)."""
        super().pull(config)
        cls(config).load()
