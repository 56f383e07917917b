"""A batch whose item i is bit for bit the image the same prompt and seed paint alone.

Painting B prompts in one UNet call (2B rows with classifier-free guidance: B negative, then B positive)
computes each row as a call of one prompt does (2 rows), except where a kernel's arithmetic depends on how
many rows it is given. Measured on the CPUs here (AMD EPYC Zen 3, float32, MKL sgemm; BENCHMARKS.md "Batched
painting"), layer by layer on SD 1.5's UNet at 256 px and the tiny one at 64 px: convolutions, group and layer
norms, attention (SDPA) and the large matrix products agree bit for bit; a matrix product of few rows does
not — MKL rounds M = 1, M = 2..3 and M >= 4 rows differently — which hits the timestep embedding and every
ResNet's projection of it (M = 2 rows alone, 2B in a batch).

So while a batch is denoised (``denoising_batch``), every ``Linear`` of the UNet whose per-item product is
small (rows x tokens < ``ITEMWISE_ROWS``) computes item by item, each item's rows in the order a call of one
prompt has them: the same product as alone. Those products are a negligible part of the UNet's work; the
rest runs batched. Outside a batch nothing changes (a one-prompt call is exactly what it was). Without
classifier-free guidance (guidance <= 1) an item is ONE row, and oneDNN convolves a batch of one differently
from a batch of two or more (the 4-channel input convolution, the 1x1 and 2x2 levels): such a batch runs per
item (below).

That is measured for a CPU computing in float32 only. Elsewhere (CUDA, whose libraries choose kernels by
shape; a CPU's bfloat16 kernels) the generator's ``batch_unet`` setting resolves to ``per_item``: the pipeline
gets a ``PerItemUNet``, which calls the UNet on each item's rows in turn — exactly a one-prompt call's input,
so exactly its output — and a batch saves the calls (one slot, one stream, one step loop), not the compute.
There the UNet's Linears are left plain (``itemwise_linears`` runs only for ``batched``): nothing would use
them, and ``torch.compile`` cannot trace the ``ContextVar`` they read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch

#: A Linear whose per-item product has fewer rows (rows x tokens) than this runs item by item in a batch.
ITEMWISE_ROWS = 256

#: While a batch is denoised on this thread: (items, rows per item: 2 with classifier-free guidance, else 1).
_BATCH: ContextVar[tuple[int, int] | None] = ContextVar("audiomemory_generator_batch", default=None)


class ItemwiseLinear(torch.nn.Linear):
    """``torch.nn.Linear`` that, inside ``denoising_batch``, computes a small product item by item."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = _BATCH.get()
        if batch is None:
            return super().forward(x)
        items, rows = batch
        if x.dim() < 2 or x.shape[0] != items * rows or rows * (x[0].numel() // x.shape[-1]) >= ITEMWISE_ROWS:
            return super().forward(x)
        # [rows x items, ...] (all negatives, then all positives) → [items, rows, ...]: item i's rows as alone.
        parts = x.unflatten(0, (rows, items)).transpose(0, 1)
        out = torch.stack([torch.nn.functional.linear(p.contiguous(), self.weight, self.bias) for p in parts])
        return out.transpose(0, 1).flatten(0, 1)


def itemwise_linears(model: torch.nn.Module) -> int:
    """Make every plain ``Linear`` of ``model`` an ``ItemwiseLinear`` (same parameters; identical outside a
    batch); returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = ItemwiseLinear
            count += 1
    return count


@contextlib.contextmanager
def denoising_batch(items: int, rows: int) -> Iterator[None]:
    """While inside, the UNet's ``ItemwiseLinear``s called on this thread take their input as ``items`` items of
    ``rows`` rows (the pipeline's order: row r of item i at ``r * items + i``)."""
    token = _BATCH.set((items, rows) if items > 1 else None)
    try:
        yield
    finally:
        _BATCH.reset(token)


class PerItemUNet:
    """The UNet as a pipeline sees it, called on each item's rows in turn (``batch_unet = per_item``)."""

    def __init__(self, unet: Any, items: int) -> None:
        self.unet = unet
        self.items = items

    def __getattr__(self, name: str) -> Any:  # config, dtype, device, …: the UNet's
        return getattr(self.unet, name)

    def __call__(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **kwargs: Any
                 ) -> tuple[torch.Tensor]:
        if any(isinstance(v, torch.Tensor) for v in kwargs.values()):
            raise NotImplementedError("PerItemUNet: per-row keyword inputs (timestep_cond, …) are not split")
        items, rows = self.items, sample.shape[0] // self.items
        per_row = isinstance(timestep, torch.Tensor) and timestep.dim() == 1 and len(timestep) == len(sample)
        out: torch.Tensor | None = None
        for i in range(items):
            index = torch.arange(rows, device=sample.device) * items + i  # item i's rows, in the pipeline's order
            part = self.unet(sample[index], timestep[index] if per_row else timestep,
                             encoder_hidden_states=encoder_hidden_states[index], **{**kwargs, "return_dict": False})[0]
            if out is None:
                out = part.new_empty((len(sample), *part.shape[1:]))
            out[index] = part
        assert out is not None
        return (out,)


def guidance_rows(unet: Any, guidance: float) -> int:
    """Rows per item the pipeline gives the UNet: 2 with classifier-free guidance (negative, positive), else 1."""
    return 2 if guidance > 1 and unet.config.time_cond_proj_dim is None else 1


def resolve_batch_unet(setting: str, device_type: str, dtype: torch.dtype) -> str:
    """``batched`` or ``per_item``: ``auto`` is batched where a batch (with guidance) was measured bit-identical to
    its items painted alone (a CPU computing in float32), per_item elsewhere."""
    if setting != "auto":
        return setting
    return "batched" if device_type == "cpu" and dtype == torch.float32 else "per_item"
