"""Demucs' ``apply_model(bag, mix, split=True, shifts=0)`` as a stream of finished stretches.

``apply_model`` allocates the whole song's output (stems × channels × frames) and returns it at the
end. Here the same segments run in the same order (``TensorChunk(mix, offset, segment_length)``
through ``apply_model(..., split=False)``, as its split branch does), each sub-model keeps a rolling
weighted sum and weight sum one segment long, and a stretch is handed out as soon as no later
segment touches it. A bag's sub-models are combined per stretch with the same arithmetic as
``apply_model`` (per-source weights, then division by the totals), so the concatenated stretches
equal ``apply_model``'s output bit for bit while only ~one segment of output is ever held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from demucs.apply import BagOfModels

#: Runs one sub-model on one ``TensorChunk`` (``apply_model(..., split=False)``), returns its stems.
RunSegment = Callable[[Any, Any], torch.Tensor]


def segment_frames(model: Any, segment: float | None) -> int:
    """Frames per model call, as ``apply_model`` computes them (the model's own segment when None)."""
    return int(model.samplerate * (segment if segment is not None else model.segment))


def _weight(segment_length: int, device: torch.device) -> torch.Tensor:
    # apply_model's triangle, normalised, to the power transition_power=1 (kept for the same rounding).
    weight = torch.cat([torch.arange(1, segment_length // 2 + 1, device=device),
                        torch.arange(segment_length - segment_length // 2, 0, -1, device=device)])
    return (weight / weight.max()) ** 1.0


def overlap_add(model: Any, mix: torch.Tensor, run: RunSegment, *, segment: float | None, overlap: float,
                device: torch.device) -> Iterator[torch.Tensor]:
    """One sub-model over ``mix`` ``[batch, channels, length]``: its output, ``[batch, sources, channels, n]``
    stretches in time order, each final (divided by the weight sum) once the segments covering it ran."""
    from demucs.apply import TensorChunk

    batch, channels, length = mix.shape
    segment_length = segment_frames(model, segment)
    stride = int((1 - overlap) * segment_length)
    if stride < 1:
        raise ValueError(f"overlap: {overlap} leaves no stride for a {segment_length}-frame segment")
    weight = _weight(segment_length, device)
    # acc/total cover [offset, offset + segment_length): the current segment; earlier frames are out.
    acc = torch.zeros(batch, len(model.sources), channels, segment_length, device=mix.device)
    total = torch.zeros(segment_length, device=mix.device)
    for offset in range(0, length, stride):
        chunk_out = run(model, TensorChunk(mix, offset, segment_length))
        n = chunk_out.shape[-1]
        acc[..., :n] += (weight[:n] * chunk_out).to(mix.device)
        total[:n] += weight[:n].to(mix.device)
        done = min(stride, length - offset)  # the next segment starts at offset + stride
        yield acc[..., :done] / total[:done]
        acc = torch.cat([acc[..., done:], torch.zeros_like(acc[..., :done])], dim=-1)
        total = torch.cat([total[done:], torch.zeros_like(total[:done])])


def bag_stretches(bag: BagOfModels, mix: torch.Tensor, run: RunSegment, *, segment: float | None,
                  overlap: float, device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, [batch, sources, channels, n])`` of the bag's combined output, in time order."""
    streams = [overlap_add(m, mix, run, segment=segment, overlap=overlap, device=device) for m in bag.models]
    totals = [0.0] * len(bag.sources)
    for model_weights in bag.weights:  # summed in apply_model's order, for the same rounding
        for k, inst_weight in enumerate(model_weights):
            totals[k] += inst_weight
    batch, channels, length = mix.shape
    # Finished frames of each sub-model not yet combined (sub-models may use other segment lengths).
    pending = [torch.zeros(batch, len(bag.sources), channels, 0, device=mix.device) for _ in streams]
    start = 0
    while start < length:
        for i, stream in enumerate(streams):
            while pending[i].shape[-1] == 0:
                pending[i] = torch.cat([pending[i], next(stream)], dim=-1)
        n = min(p.shape[-1] for p in pending)
        estimates: torch.Tensor | None = None
        for i, (piece, model_weights) in enumerate(zip(list(pending), bag.weights, strict=True)):
            out = piece[..., :n].clone()
            pending[i] = piece[..., n:]
            for k, inst_weight in enumerate(model_weights):
                out[:, k, :, :] *= inst_weight
            estimates = out if estimates is None else estimates.add_(out)
        assert estimates is not None
        for k in range(estimates.shape[1]):
            estimates[:, k, :, :] /= totals[k]
        yield start, estimates
        start += n
