"""The ``openvino`` backend: the ``stable-diffusion`` backend with its UNet run by OpenVINO's CPU runtime.

Everything but the UNet's forward pass is the diffusers backend's (``StableDiffusionBackend``): the
embeddings in, the schedulers, the seeds' noise, progress and cancellation after every step, the VAE
decoding in float32 with its NaN guard, batches. The UNet is converted once per *static* shape —
(rows, latent height, latent width): rows is 2 with classifier-free guidance, else 1 — with
``openvino.convert_model`` (traced from the loaded torch UNet), saved as OpenVINO IR in the compiled-model
cache and compiled for the CPU there (OpenVINO's own ``CACHE_DIR`` keeps the compiled blob, so a second
start neither converts nor compiles). A cache entry is keyed by what makes its graph:

    <cache>/<weights' revision>/ov-<openvino version>-torch-<torch version>-diffusers-<version>/unet-<rows>x<h>x<w>.xml

The weights' revision is the content hash of a local folder or the hub commit: other weights, another
entry. The backend paints only the sizes its configuration lists (``compiled_sizes``, the default size
first): each is converted at ``load`` where the cache lacks it (``models pull`` does it once on the volume;
about 20 s and 3.4 GB of IR a size for SD 1.5 on two cores, BENCHMARKS.md) and compiled on first use, and at
most ``MAX_COMPILED_SHAPES`` compiled sizes are held (least recently used leave). A request for any other
size is refused before any work: a caller never makes the service convert a graph or write one to disk. A
call without guidance (one row) runs the two-row graph with its row twice: one graph a size.

Precision goes through the one policy (``runtime.precision``): bfloat16 on a CPU with native bf16
instructions (OpenVINO's ``INFERENCE_PRECISION_HINT`` bf16), else float32. A batch always runs per item
(each item's rows in turn): the compiled graph has one static row count.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audiomemory.generator.backends.stable_diffusion import StableDiffusionBackend
from audiomemory.runtime import compiled as ovcache
from audiomemory.runtime.backend import ModelInfo
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput
from audiomemory.runtime.hub import safetensors_only
from audiomemory.runtime.precision import choose_precision

if TYPE_CHECKING:
    import torch

    from audiomemory.generator.config import GeneratorConfig

log = logging.getLogger(__name__)

#: Compiled UNet shapes held at once (each holds its own copy of the weights: 3.4 GB for SD 1.5 in float32).
MAX_COMPILED_SHAPES = 2
#: OpenVINO's inference precision for each precision the policy can choose.
OV_PRECISION = {"float32": "f32", "bfloat16": "bf16"}
Shape = tuple[int, int, int]
#: Rows of every compiled graph: the guided call's (unconditional and conditional); one row runs twice.
ROWS = 2


def runtime_versions() -> str:
    """The versions a converted UNet depends on, as one path component."""
    return ovcache.runtime_versions("diffusers")


def openvino_precision(setting: str, flags: frozenset[str] | None = None) -> str:
    """float32 or bfloat16 for ``setting`` on a CPU with ``flags`` (this one's by default): the one policy's
    choice (bfloat16 where the CPU has native bf16 instructions), refused where OpenVINO's CPU has no such mode."""
    chosen = choose_precision(setting, "cpu", tuple(OV_PRECISION), flags)
    if chosen not in OV_PRECISION:
        raise FailedPrecondition(f"precision: the openvino backend runs {', '.join(OV_PRECISION)} (or auto), "
                                 f"got {setting!r}")
    return chosen


class _Traceable:
    """The UNet's forward as ``convert_model`` traces it: positional tensors in, the noise prediction out."""

    def __new__(cls, unet: Any) -> Any:
        import torch

        class Forward(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.unet = unet

            def forward(self, sample: torch.Tensor, timestep: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
                return self.unet(sample, timestep, encoder_hidden_states=states, return_dict=False)[0]

        return Forward()


class CompiledUNets:
    """The UNet compiled by OpenVINO's CPU plugin, one compiled model per static shape (thread-safe).

    ``load_unet()`` gives the torch UNet (loaded from the weights if need be); it is called only for a shape the cache
    lacks, and ``release_unet()`` once that shape is saved (the compiled model holds its own copy of the weights).
    """

    def __init__(self, load_unet: Callable[[], Any], release_unet: Callable[[], None], folder: Path, precision: str,
                 threads: int, shapes: tuple[Shape, ...]) -> None:
        self.shapes = shapes  # the only shapes converted or compiled (the configured sizes')
        self.load_unet = load_unet
        self.release_unet = release_unet
        self.folder = folder
        self.writable = ovcache.writable(folder)
        self.compile_graph = ovcache.cpu_compiler(folder, self.writable, OV_PRECISION[precision], threads)
        self._compiled: OrderedDict[Shape, Any] = OrderedDict()
        self._lock = threading.Lock()
        # seconds spent converting (all shapes so far) and compiling the last new shape (logs, benchmarks)
        self.timings: dict[str, float] = {"convert_s": 0.0, "compile_s": 0.0}

    def ir_file(self, shape: Shape) -> Path:
        rows, height, width = shape
        return self.folder / f"unet-{rows}x{height}x{width}.xml"

    def convert(self, shape: Shape, tokens: int, dim: int) -> Any:
        """Trace the torch UNet at ``shape`` into an OpenVINO model; save it as IR when the cache is writable."""
        import openvino
        import torch

        rows, height, width = shape
        start = time.perf_counter()
        unet = self.load_unet()
        example = (torch.zeros(rows, int(unet.config.in_channels), height, width), torch.zeros(rows),
                   torch.zeros(rows, tokens, dim))
        with torch.no_grad():  # traced first: 3x faster than handing convert_model the module (tiny UNet, 2 cores)
            traced = torch.jit.trace(_Traceable(unet), example, check_trace=False)
            model = openvino.convert_model(traced, example_input=example)
        del unet, traced
        self.timings["convert_s"] += time.perf_counter() - start
        if self.writable:
            ovcache.save_ir(model, self.ir_file(shape))
        return model

    def prepare(self, tokens: int, dim: int) -> None:
        """Convert into the cache each configured shape it lacks (a writable cache; a read-only one converts a
        missing shape in memory on its first use)."""
        if not self.writable:
            return
        # one converter at a time on the volume too: replicas starting together wait and read the first's files
        with self._lock, ovcache.converting(self.folder):
            for shape in self.shapes:
                if not self.ir_file(shape).is_file():
                    self.convert(shape, tokens, dim)
                    gc.collect()

    def compiled(self, shape: Shape, tokens: int, dim: int) -> Any:
        """The compiled model of ``shape`` (converted and compiled on first use; the least recently used leaves)."""
        if shape not in self.shapes:  # the request check refuses such sizes first; no caller makes a graph
            raise InvalidInput(f"width x height: latent shape {shape[1:]} is not one of this generator's sizes")
        with self._lock:
            if shape in self._compiled:
                self._compiled.move_to_end(shape)
                return self._compiled[shape]
            path = self.ir_file(shape)
            model: Any = str(path) if path.is_file() else self.convert(shape, tokens, dim)
            if self.writable and path.is_file():
                # compiled from the file (a cached blob is found without reading the graph), the converted graph
                # and the torch weights it shares gone first: one copy of the weights in memory, not three
                model = str(path)
                self.release_unet()
                gc.collect()
            start = time.perf_counter()
            compiled = self.compile_graph(model)
            self.timings["compile_s"] = time.perf_counter() - start
            self._compiled[shape] = compiled
            while len(self._compiled) > MAX_COMPILED_SHAPES:
                self._compiled.popitem(last=False)
            return compiled


class OpenVINOUNet:
    """What the diffusers pipeline calls as its UNet: each call runs the compiled model of the call's shape."""

    def __init__(self, config: Any, compiled: CompiledUNets) -> None:
        import torch

        self.config = config
        self.dtype = torch.float32
        self.device = torch.device("cpu")
        self.compiled = compiled

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **kwargs: Any
                 ) -> tuple[torch.Tensor]:
        import torch

        if any(v is not None for k, v in kwargs.items() if k != "return_dict"):
            raise NotImplementedError(f"OpenVINOUNet: only sample, timestep and states are converted: {sorted(kwargs)}")
        rows, _, height, width = sample.shape
        if rows not in (1, ROWS):
            raise NotImplementedError(f"OpenVINOUNet: {ROWS} rows a call (or 1), got {rows}")
        if rows == 1:  # no guidance: the one row twice through the two-row graph (rows never mix), the first kept
            sample, encoder_hidden_states = sample.repeat(ROWS, 1, 1, 1), encoder_hidden_states.repeat(ROWS, 1, 1)
        steps = torch.as_tensor(timestep, dtype=torch.float32).reshape(-1)[:1].expand(ROWS)
        model = self.compiled.compiled((ROWS, height, width), encoder_hidden_states.shape[1],
                                       encoder_hidden_states.shape[2])
        request = model.create_infer_request()  # one a call: concurrent calls never share one
        out = request.infer({0: sample.float().numpy(), 1: np.ascontiguousarray(steps.numpy()),
                             2: encoder_hidden_states.float().numpy()})[0]
        return (torch.from_numpy(np.array(out)[:rows]),)


class OpenVINOBackend(StableDiffusionBackend):
    """Stable Diffusion with the UNet compiled by OpenVINO (CPU); everything else as ``stable-diffusion``."""

    name = "openvino"

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__(config)
        self._unets: CompiledUNets | None = None
        self._ov_unet: OpenVINOUNet | None = None
        self._precision = "float32"
        self._spare: Any = None
        self.load_seconds = 0.0

    def torch_dtype(self, device_type: str) -> torch.dtype:
        """The torch side stays float32 (noise, embeddings, the VAE); OpenVINO computes in the chosen precision."""
        import torch

        if device_type != "cpu":
            raise FailedPrecondition(f"device: the openvino backend runs on the CPU, got {self.config.device!r}")
        self._precision = openvino_precision(self.config.precision)
        return torch.float32

    def load(self) -> None:
        import torch

        start = time.perf_counter()
        super().load()
        unet = self.pipeline.unet
        folder = ovcache.cache_folder(self.config.compiled_cache, self._revision, "diffusers")
        scale = int(self.pipeline.vae_scale_factor)
        shapes = tuple((ROWS, h // scale, w // scale) for w, h in self.sizes)
        self._unets = CompiledUNets(self._torch_unet, self._release_unet, folder, self._precision,
                                    torch.get_num_threads(), shapes)
        self._ov_unet = OpenVINOUNet(unet.config, self._unets)
        self._batch_unet = "per_item"  # one static row count per compiled shape
        self._spare = unet  # the sizes the cache lacks are traced from the UNet just loaded
        self._unets.prepare(self.max_length, self.cross_attention_dim)
        self._unets.compiled(shapes[0], self.max_length, self.cross_attention_dim)  # the default size
        self._release_unet()
        self.load_seconds = time.perf_counter() - start
        log.info("openvino UNet ready in %.1f s (%s; converted in %.1f s, compiled in %.1f s; cache %s)",
                 self.load_seconds, self._precision, self._unets.timings["convert_s"],
                 self._unets.timings["compile_s"], folder)

    def _release_unet(self) -> None:
        """The loaded torch UNet's weights leave (OpenVINO holds its own); its config stays for the pipeline."""
        self._spare = None
        self.pipeline.unet.to("meta")

    def _torch_unet(self) -> Any:
        """The torch UNet from the weights, float32, for tracing one shape."""
        from diffusers import UNet2DConditionModel

        if self._spare is not None:
            return self._spare
        assert self._folder is not None
        return safetensors_only("generator", self._folder, lambda: UNet2DConditionModel.from_pretrained(
            str(self._folder), subfolder="unet", local_files_only=True, use_safetensors=True).eval())

    @property
    def sizes(self) -> tuple[tuple[int, int], ...]:
        """``compiled_sizes`` (the default size first): the only sizes converted and painted."""
        return self.config.sizes()

    def denoiser(self) -> Any:
        if self._ov_unet is None:
            raise FailedPrecondition("the openvino backend was used before load()")
        return self._ov_unet

    def describe(self) -> ModelInfo:
        import openvino

        info = super().describe()
        info.dtype = self._precision
        info.extra["runtime"] = f"openvino {openvino.get_version().split('-')[0]}"
        return info

    @classmethod
    def pull(cls, config: GeneratorConfig) -> None:  # type: ignore[override]
        """Fetch the weights, then convert the default size into the cache (``models pull``: the volume's writer)."""
        super().pull(config)
        cls(config).load()
