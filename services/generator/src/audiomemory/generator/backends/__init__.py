"""The generator backend contract: prompt embeddings in, an image out.

``generate`` takes a plain ``ImageRequest`` (numpy embeddings, no protobuf), reports each finished
denoising step through ``on_step(step, total)`` and polls ``should_stop()`` after every step so a
cancelled or expired call stops within one step (``GenerationStopped``). ``generate_batch`` paints a
batch (``ImageRequest.seeds``: item i of ``prompt_embeds`` with ``seeds[i]``) and returns the images in
order; a backend that cannot batch inherits the default, which paints the items one after another.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from audiomemory.runtime.backend import Backend
from audiomemory.runtime.errors import Cancelled, InvalidInput
from audiomemory.runtime.errors import describe as short

MIN_STEPS, MAX_STEPS = 1, 150
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 30.0
MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 64, 1024, 8
MAX_SEED = 2**64 - 1
Size = tuple[int, int]  # (width, height) in pixels


@dataclass(frozen=True)
class ImageRequest:
    """One image to paint, or a batch. One: ``prompt_embeds``/``negative_prompt_embeds`` float ``[1, L, D]``,
    painted with ``seed``, ``seeds`` empty. A batch: ``seeds`` (B of them, ``seed`` unused), ``prompt_embeds``
    ``[B, L, D]`` (item i painted with ``seeds[i]``), ``negative_prompt_embeds`` ``[1, L, D]`` (shared) or
    ``[B, L, D]``; every other setting is the whole batch's."""

    prompt_embeds: np.ndarray
    negative_prompt_embeds: np.ndarray
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str
    seeds: tuple[int, ...] = ()

    @property
    def item_seeds(self) -> tuple[int, ...]:
        """Each item's seed, in order (``(seed,)`` for one image)."""
        return self.seeds or (self.seed,)

    def item(self, index: int) -> ImageRequest:
        """Item ``index`` of the batch as the one-image request that paints it alone."""
        negative = self.negative_prompt_embeds
        return replace(
            self, prompt_embeds=self.prompt_embeds[index:index + 1], seed=self.item_seeds[index], seeds=(),
            negative_prompt_embeds=negative if negative.shape[0] == 1 else negative[index:index + 1],
        )


@dataclass(frozen=True)
class GeneratedImage:
    """The painted image and what actually ran."""

    image: Image.Image
    scheduler: str
    steps_run: int  # denoising iterations (UNet calls) that ran
    total_steps: int  # iterations the schedule had


class GenerationStopped(Cancelled):
    """``should_stop()`` said yes: the caller cancelled or its deadline passed (CANCELLED)."""

    def __init__(self, steps_run: int, total_steps: int) -> None:
        super().__init__(f"generation stopped after {steps_run} of {total_steps} denoising steps")
        self.steps_run = steps_run
        self.total_steps = total_steps


def check_request(
    request: ImageRequest, *, cross_attention_dim: int, schedulers: list[str], max_batch: int = 1,
    sizes: tuple[Size, ...] = (),
) -> None:
    """Validate every field of ``request``; raise ``InvalidInput`` naming the field and the limit. ``sizes``:
    the only (width, height) pairs the backend paints (empty: any within the bounds)."""
    for name in ("prompt_embeds", "negative_prompt_embeds"):
        arr = getattr(request, name)
        if arr.ndim != 3:
            raise InvalidInput(f"{name}: expected shape [B, L, D], got {short(arr)}")
        if arr.shape[2] != cross_attention_dim:
            raise InvalidInput(
                f"{name}: embedding dim {arr.shape[2]} does not match the generator's cross-attention "
                f"dim {cross_attention_dim}; the text encoder and the generator models do not fit together"
            )
        if not np.all(np.isfinite(arr)):
            raise InvalidInput(f"{name}: values must be finite (NaN or Inf found)")
    batch = check_batch(request, max_batch)
    prompt, negative = request.prompt_embeds.shape, request.negative_prompt_embeds.shape
    if negative[1:] != prompt[1:] or negative[0] not in (1, batch):
        shared = f" or [1, L, D] {(1, *prompt[1:])} (one shared by the batch)" if batch > 1 else ""
        raise InvalidInput(
            f"negative_prompt_embeds: shape {tuple(negative)} must equal prompt_embeds' shape {tuple(prompt)}{shared}"
        )
    for index, seed in enumerate(request.seeds):
        if not 0 <= seed <= MAX_SEED:
            raise InvalidInput(f"seeds[{index}]: must be in 0..2**64-1, got {short(seed)}")
    if not 0 <= request.seed <= MAX_SEED:
        raise InvalidInput(f"seed: must be in 0..2**64-1, got {short(request.seed)}")
    if not MIN_STEPS <= request.steps <= MAX_STEPS:
        raise InvalidInput(f"steps: must be in {MIN_STEPS}..{MAX_STEPS}, got {request.steps}")
    if not (math.isfinite(request.guidance) and MIN_GUIDANCE <= request.guidance <= MAX_GUIDANCE):
        raise InvalidInput(
            f"guidance: must be finite and in {MIN_GUIDANCE:g}..{MAX_GUIDANCE:g}, got {request.guidance}"
        )
    for name in ("width", "height"):
        value = getattr(request, name)
        if not (MIN_SIZE <= value <= MAX_SIZE and value % SIZE_MULTIPLE == 0):
            raise InvalidInput(
                f"{name}: must be a multiple of {SIZE_MULTIPLE} in {MIN_SIZE}..{MAX_SIZE}, got {value}"
            )
    if sizes and (request.width, request.height) not in sizes:
        raise InvalidInput(
            f"width x height: this generator paints only {format_sizes(sizes)} (its compiled_sizes), "
            f"got {request.width}x{request.height}"
        )
    if request.scheduler not in schedulers:
        raise InvalidInput(f"scheduler: {short(request.scheduler)} is not one of {', '.join(schedulers)}")


def format_sizes(sizes: tuple[Size, ...]) -> str:
    """``512x512, 768x512``: sizes as messages and settings write them (width first)."""
    return ", ".join(f"{w}x{h}" for w, h in sizes)



def check_batch(request: ImageRequest, max_batch: int) -> int:
    """The batch's size: ``len(seeds)`` items (1..``max_batch``), one ``prompt_embeds`` row each; no seeds = one."""
    rows = request.prompt_embeds.shape[0]
    if not request.seeds:
        if rows != 1:
            raise InvalidInput(
                f"prompt_embeds: expected shape [1, L, D] (a batch gives each item's seed in `seeds`), got "
                f"{short(request.prompt_embeds)}"
            )
        return 1
    if len(request.seeds) > max_batch:
        raise InvalidInput(
            f"seeds: a batch has at most {max_batch} items (the generator's max_batch), got {len(request.seeds)}"
        )
    if rows != len(request.seeds):
        raise InvalidInput(
            f"prompt_embeds: shape[0] must equal the batch's {len(request.seeds)} seeds, got "
            f"{short(request.prompt_embeds)}"
        )
    return rows


class GeneratorBackend(Backend):
    """Base of generator backends. After ``load()`` the properties below describe the model."""

    @property
    @abstractmethod
    def cross_attention_dim(self) -> int:
        """D the prompt embeddings must have."""

    @property
    @abstractmethod
    def max_length(self) -> int:
        """Tokens per prompt the model was trained with (77)."""

    @property
    @abstractmethod
    def native_size(self) -> int:
        """Image side the model was trained at (512 for SD 1.5)."""

    @property
    @abstractmethod
    def schedulers(self) -> list[str]:
        """Scheduler names ``ImageRequest.scheduler`` accepts (the default scheduler's name first)."""

    @property
    @abstractmethod
    def default_scheduler(self) -> str:
        """The scheduler used when a request names none."""

    @abstractmethod
    def generate(
        self,
        request: ImageRequest,
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> GeneratedImage:
        """Paint one image. ``on_step(step, total)`` after every step (1-based); stop when ``should_stop()``."""

    @property
    def sizes(self) -> tuple[Size, ...]:
        """The only (width, height) pairs it paints, where it has a fixed set (a compiled backend); empty: any size
        within MIN_SIZE..MAX_SIZE in steps of SIZE_MULTIPLE (this default)."""
        return ()

    def batch_unet(self, request: ImageRequest) -> str:
        """How a batch like ``request`` runs the model: ``batched`` (one call per step for the whole batch) or
        ``per_item`` (each item's own, in turn: this default)."""
        return "per_item"

    def generate_batch(
        self,
        request: ImageRequest,
        on_step: Callable[[int, int], None],
        should_stop: Callable[[], bool],
    ) -> list[GeneratedImage]:
        """Paint a batch (``request.seeds``; one image when empty): the images in order, item i exactly as
        ``generate(request.item(i))`` paints it. This default paints the items one after another and counts
        their steps as one run of B x the steps; a backend that batches its model calls overrides it."""
        count = len(request.item_seeds)
        images: list[GeneratedImage] = []
        for index in range(count):
            def step(done: int, total: int, before: int = index) -> None:
                on_step(before * total + done, count * total)

            images.append(self.generate(request.item(index), step, should_stop))
        return images
