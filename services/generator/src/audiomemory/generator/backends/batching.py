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
rest runs batched. Outside a batch nothing changes (a one-prompt call is exactly what it was).
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


def guidance_rows(pipe: Any, guidance: float) -> int:
    """Rows per item the pipeline gives the UNet: 2 with classifier-free guidance (negative, positive), else 1."""
    return 2 if guidance > 1 and pipe.unet.config.time_cond_proj_dim is None else 1
