"""The ``stable-diffusion`` backend: a diffusers ``StableDiffusionPipeline`` fed with embeddings.

The pipeline is loaded WITHOUT its text encoder and tokenizer (the text encoder service makes the embeddings) and
without the safety checker. Each request gets its own light pipeline object that shares the loaded UNet and VAE but
owns its scheduler and interrupt flag, so concurrent requests never share scheduler state. Denoising returns
latents; the VAE decode runs here so a cancelled run skips it and always runs in float32 (SD 1.5's VAE overflows to
NaN/black in float16). The ``openvino`` backend (openvino.py) is this one with another ``denoiser``.

The UNet's dtype comes from ``GeneratorConfig.precision`` through the one precision policy (``runtime.precision``,
``compute_dtype``): float16 on CUDA, bfloat16 on a CPU with native bf16 instructions, else float32. Measured with a
one-off probe (BENCHMARKS.md "One-off probes") on the 2-core AVX-512 BF16 sandbox, full-size random-weight SD 1.5:
a UNet step 1.5-1.6x faster at 512 px and 1.9x at 256 px, the 8-bit image 50 dB PSNR from float32's. The initial
noise is always drawn in float32 and then cast, so one seed starts every precision from the same noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audiomemory.generator.backends import (
    GeneratedImage,
    GenerationStopped,
    GeneratorBackend,
    ImageRequest,
    check_request,
)
from audiomemory.runtime.backend import ModelInfo, resolve_device
from audiomemory.runtime.errors import AudioMemoryError, FailedPrecondition
from audiomemory.runtime.hub import pull_model, resolve_model_dir, safetensors_only
from audiomemory.runtime.precision import choose_precision

if TYPE_CHECKING:
    import torch

    from audiomemory.generator.config import GeneratorConfig, Precision

# What a hub snapshot needs; SD 1.5's text encoder, safety checker and fp16/ema variants are skipped.
ALLOW_PATTERNS = ("model_index.json", "scheduler/*", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                  "vae/config.json", "vae/diffusion_pytorch_model.safetensors")

# diffusers builds its pipeline classes lazily; mypy sees a stub without their attributes.
Pipeline = Any
StepReport = Callable[[int, int], None]
StopCheck = Callable[[], bool]

#: Tokens per prompt SD was trained with (CLIP's context length).
TRAINED_PROMPT_LENGTH = 77
#: The tiny UNet's cross-attention dim: must equal the tiny CLIP's hidden size (32).
TINY_CROSS_ATTENTION_DIM = 32
TINY_DIRNAME = "tiny-sd"

#: What ``auto`` may run besides float32 (``runtime.precision``): float16 on CUDA, bfloat16 on a native-bf16 CPU.
SUPPORTED_PRECISIONS = ("float16", "bfloat16")


def compute_dtype(precision: Precision, device_type: str, flags: frozenset[str] | None = None) -> torch.dtype:
    """The UNet's dtype for ``precision`` on a device of ``device_type`` whose CPU has ``flags`` (this
    machine's by default), as the one precision policy decides it (``runtime.precision.choose_precision``)."""
    import torch

    chosen = choose_precision(precision, device_type, SUPPORTED_PRECISIONS, flags)
    dtype: torch.dtype = getattr(torch, chosen)
    return dtype


# name → (diffusers class name, overrides on the pipeline's own scheduler config). The config keeps
# the model's beta schedule; only the sampling algorithm changes.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    # SD 1.5 ships clip_sample=false; DDIM's own default (true) would clip latents meant to be unclipped.
    "ddim": ("DDIMScheduler", {"clip_sample": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
}


def embeds_pipeline(unet: Any, vae: Any, scheduler: Any) -> Pipeline:
    """A ``StableDiffusionPipeline`` fed with embeddings: no text encoder, tokenizer or safety checker."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def save_pipeline(folder: Path, unet: Any, vae: Any) -> None:
    """Write ``unet`` and ``vae`` with SD 1.5's own scheduler config as a pipeline folder this backend loads."""
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    embeds_pipeline(unet, vae, scheduler).save_pretrained(str(folder))


class StableDiffusionBackend(GeneratorBackend):
    """Stable Diffusion from ``prompt_embeds``/``negative_prompt_embeds``."""

    name = "stable-diffusion"

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__(config)
        self.config: GeneratorConfig = config
        self._pipe: Pipeline | None = None
        self._revision = ""
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None
        self._default_scheduler = ""
        self._own_scheduler_name = ""  # set when the model's scheduler is none of SCHEDULERS
        self._batch_unet = "per_item"
        self._folder: Path | None = None

    def torch_dtype(self, device_type: str) -> torch.dtype:  # the torch UNet's, the noise's, the embeddings' dtype
        return compute_dtype(self.config.precision, device_type)

    def denoiser(self) -> Any:
        """What the pipeline calls as its UNet (the loaded torch UNet here; a compiled stand-in elsewhere)."""
        return self._loaded().unet

    def load(self) -> None:
        import torch
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import logging as df_logging

        from audiomemory.generator.backends.batching import itemwise_linears, resolve_batch_unet

        if self.config.safety_checker:
            raise FailedPrecondition(
                "safety_checker: the stable-diffusion backend runs without SD's safety checker; "
                "set AUDIOMEMORY_GENERATOR_SAFETY_CHECKER=false"
            )
        df_logging.disable_progress_bar()  # a server log is no terminal
        folder, self._revision = resolve_model_dir(
            self.config.model, self.config.revision, ALLOW_PATTERNS, service="generator"
        )
        self._device = resolve_device(self.config.device)
        self._dtype = self.torch_dtype(self._device.type)
        self._folder = folder
        pipe = safetensors_only("generator", folder, lambda: StableDiffusionPipeline.from_pretrained(
            str(folder),
            text_encoder=None,
            tokenizer=None,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            dtype=self._dtype,
            local_files_only=True,
            use_safetensors=True,
        ))
        pipe.to(self._device)
        if self._dtype != torch.float32:
            # SD 1.5's VAE decoder overflows in float16 (NaN → black images) and bfloat16 has 8 bits
            # of mantissa: decode in float32, the decode is one call against the UNet's many.
            pipe.vae.to(torch.float32)
        pipe.unet.eval()
        pipe.vae.eval()
        self._batch_unet = resolve_batch_unet(self.config.batch_unet, self._device.type, self._dtype)
        if self._batch_unet == "batched":  # small products item by item: item i as alone (batching.py), only here
            itemwise_linears(pipe.unet)
        self._pipe = pipe
        own = type(pipe.scheduler).__name__
        matches = [n for n, (cls, _) in SCHEDULERS.items() if cls == own]
        if matches:
            self._default_scheduler = matches[0]
        else:
            self._own_scheduler_name = self._default_scheduler = own
        if self.config.default_scheduler:
            if self.config.default_scheduler not in self.schedulers:
                raise FailedPrecondition(
                    f"default_scheduler: {self.config.default_scheduler!r} is not one of {', '.join(self.schedulers)}"
                )
            self._default_scheduler = self.config.default_scheduler

    # -- facts -------------------------------------------------------------------------------
    def _loaded(self) -> Pipeline:
        if self._pipe is None:
            raise FailedPrecondition("the stable-diffusion backend was used before load()")
        return self._pipe

    @property
    def pipeline(self) -> Pipeline:
        """The loaded pipeline (shared UNet/VAE), for benchmarks and instrumentation."""
        return self._loaded()

    @property
    def cross_attention_dim(self) -> int:
        return int(self._loaded().unet.config.cross_attention_dim)

    @property
    def max_length(self) -> int:
        return TRAINED_PROMPT_LENGTH

    @property
    def native_size(self) -> int:
        pipe = self._loaded()
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)

    @property
    def schedulers(self) -> list[str]:
        names = list(SCHEDULERS)
        if self._own_scheduler_name:
            names.append(self._own_scheduler_name)
        names.remove(self._default_scheduler)
        return [self._default_scheduler, *names]

    @property
    def default_scheduler(self) -> str:
        self._loaded()
        return self._default_scheduler

    def describe(self) -> ModelInfo:
        pipe = self._loaded()
        return ModelInfo(
            backend=self.name,
            model_id=self.config.model,
            revision=self._revision,
            device=str(self._device),
            dtype=str(self._dtype).removeprefix("torch."),
            extra={
                "cross_attention_dim": str(self.cross_attention_dim),
                "native_size": str(self.native_size),
                "schedulers": ",".join(self.schedulers),
                "default_scheduler": self._default_scheduler,
                "default_steps": str(self.config.default_steps),
                "default_guidance": f"{self.config.default_guidance:g}",
                "vae_scale_factor": str(pipe.vae_scale_factor),
                "precision": self.config.precision,  # the setting; dtype is what it resolved to
                "vae_dtype": "float32",
                "seed_generator": "cpu",
                "safety_checker": "off",
            },
        )

    # -- the verb ----------------------------------------------------------------------------
    def batch_unet(self, request: ImageRequest) -> str:
        """As it resolved (``batching.resolve_batch_unet``); ``per_item`` without guidance (one row an item)."""
        from audiomemory.generator.backends.batching import guidance_rows

        with_guidance = guidance_rows(self.denoiser(), request.guidance) == 2
        return "batched" if self._batch_unet == "batched" and with_guidance else "per_item"

    def _pipeline_for(self, scheduler_name: str, unet: Any = None) -> Pipeline:
        """A pipeline object of its own (shared UNet/VAE, own scheduler and interrupt flag; ``unet``: a stand-in)."""
        import diffusers

        base = self._loaded()
        if scheduler_name == self._own_scheduler_name:
            scheduler = type(base.scheduler).from_config(base.scheduler.config)
        else:
            cls_name, overrides = SCHEDULERS[scheduler_name]
            scheduler = getattr(diffusers, cls_name).from_config(base.scheduler.config, **overrides)
        pipe = embeds_pipeline(self.denoiser() if unet is None else unet, base.vae, scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _initial_noise(self, request: ImageRequest, generator: torch.Generator) -> torch.Tensor:
        """One item's initial latents ``[1, C, h, w]``, drawn in float32 and cast to the UNet's dtype (the pipeline
        would draw them in that dtype): one seed, the same noise in every precision, in float32 the pipeline's."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        base = self._loaded()
        shape = (1, int(base.unet.config.in_channels), request.height // base.vae_scale_factor,
                 request.width // base.vae_scale_factor)
        noise = randn_tensor(shape, generator=generator, device=self._device, dtype=torch.float32)
        return noise.to(self._dtype)

    def generate(self, request: ImageRequest, on_step: StepReport, should_stop: StopCheck) -> GeneratedImage:
        return self._paint(request, on_step, should_stop, max_batch=1)[0]

    def generate_batch(self, request: ImageRequest, on_step: StepReport, should_stop: StopCheck
                       ) -> list[GeneratedImage]:
        return self._paint(request, on_step, should_stop, max_batch=self.config.max_batch)

    def _paint(self, request: ImageRequest, on_step: StepReport, should_stop: StopCheck, max_batch: int
               ) -> list[GeneratedImage]:
        """The batch's images in order (one item: ``request.seed``). Item i starts from the noise its own seed
        draws alone (a CPU generator each: the same on every machine) and draws any later noise (euler_a) from
        it too; the VAE decodes item by item."""
        import torch

        from audiomemory.generator.backends.batching import PerItemUNet, denoising_batch, guidance_rows

        scheduler_name = request.scheduler or self._default_scheduler
        check_request(replace(request, scheduler=scheduler_name), cross_attention_dim=self.cross_attention_dim,
                      schedulers=self.schedulers, max_batch=max_batch, sizes=self.sizes)
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in request.item_seeds]
        count = len(generators)
        per_item = count > 1 and self.batch_unet(request) == "per_item"  # guidance <= 1: always (batching.py)
        unet = self.denoiser()
        pipe = self._pipeline_for(scheduler_name, PerItemUNet(unet, count) if per_item else None)
        done = total = 0

        def step_end(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal done, total
            done = i + 1
            total = len(p.scheduler.timesteps)  # PNDM's schedule has one more UNet call than steps
            on_step(done, total)
            if should_stop():
                p._interrupt = True  # the pipeline skips every remaining iteration
            return {}

        if should_stop():
            raise GenerationStopped(0, request.steps)
        prompt = torch.from_numpy(np.array(request.prompt_embeds, dtype=np.float32))
        negative = torch.from_numpy(np.array(request.negative_prompt_embeds, dtype=np.float32))
        with torch.inference_mode(), denoising_batch(1 if per_item else count, guidance_rows(unet, request.guidance)):
            latents = pipe(
                latents=torch.cat([self._initial_noise(request, g) for g in generators]),
                prompt_embeds=prompt.to(self._device, self._dtype),
                negative_prompt_embeds=negative.expand(count, -1, -1).to(self._device, self._dtype),
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                width=request.width,
                height=request.height,
                generator=generators if count > 1 else generators[0],
                output_type="latent",
                callback_on_step_end=step_end,
                callback_on_step_end_tensor_inputs=[],
                return_dict=False,
            )[0]
        if pipe.interrupt or should_stop():
            raise GenerationStopped(done, total)
        with torch.inference_mode():
            images = [self._decode(pipe, latents[i:i + 1]) for i in range(count)]
        return [GeneratedImage(image=image, scheduler=scheduler_name, steps_run=done, total_steps=total)
                for image in images]

    def _decode(self, pipe: Pipeline, latents: torch.Tensor) -> Any:
        """One item's latents as a PIL image, the VAE in float32."""
        import torch

        vae = self._loaded().vae
        image = vae.decode(latents.float() / vae.config.scaling_factor, return_dict=False)[0]
        if not bool(torch.isfinite(image).all()):
            raise AudioMemoryError("the VAE decode produced non-finite values (NaN/Inf)")
        return pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=[True])[0]

    # -- models on disk ----------------------------------------------------------------------
    @classmethod
    def write_tiny(cls, root: Path) -> dict[str, Any]:
        """A tiny UNet (32/64 channels, cross-attention dim 32) + VAE + SD 1.5's PNDM schedule: native size 64 px
        (latent 32, VAE scale factor 2), a pipeline folder with model_index.json."""
        import torch
        from diffusers import AutoencoderKL, UNet2DConditionModel

        folder = Path(root) / TINY_DIRNAME
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same tiny weights every time: stable content hash and images
            unet = UNet2DConditionModel(
                block_out_channels=(32, 64),
                layers_per_block=2,
                sample_size=32,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=TINY_CROSS_ATTENTION_DIM,
            )
            vae = AutoencoderKL(
                block_out_channels=(32, 64),
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                latent_channels=4,
                sample_size=64,
            )
        save_pipeline(folder, unet, vae)
        # Default to the tiny model's native 64 px: 512 px would cost 64x the compute for noise.
        return {"model": str(folder), "default_size": 64}

    @classmethod
    def pull(cls, config: GeneratorConfig) -> None:  # type: ignore[override]
        pull_model(config.model, config.revision, ALLOW_PATTERNS)

