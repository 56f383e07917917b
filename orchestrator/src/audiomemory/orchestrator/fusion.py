"""Fusion of the song's audio vector into the lyrics' text embeddings (DESIGN.md §2, exact).

Public API:
- ``STEM_ORDER``, ``pool_stems``  — the pooled vector's stem order and the pool step (``pooling.py``).
- ``Projection``                  — ``P [D, N]`` (+ optional bias): ``from_seed`` (QR of a Gaussian) or
                                    ``from_file`` (``.npz`` / ``.safetensors`` with ``weight``, ``bias``).
- ``ReferenceStats``              — per-dimension μ/σ for centring, ``from_file`` (``.npz`` / ``.safetensors``
                                    with ``mean`` and ``std``).
- ``centre(a, stats)``            — step 1.
- ``weigh_stems(a_c, weights)``   — step 1b: each stem's part of the centred vector times its weight
                                    (``None`` or all 1: ``a_c`` itself, untouched).
- ``audio_direction(a, P, stats, stem_weights)`` — steps 1–3: the unit vector ``û`` or ``None`` when
                                    ``‖u‖ < 1e-8``.
- ``fuse(E, a, alpha, ...)``      — steps 1–4: ``E'_i = E_i + α‖E_i‖û`` for every token i.
- ``Fusion``                      — the orchestrator's fusion settings (projection file or seed, reference
                                    statistics, default strength) and ``apply``, which also says whether
                                    the audio steered (``Fused.steered``).
- ``resolve_strength(value)``     — α as the wire carries it (float32), whoever chose it.

Everything here is pure: numpy in, numpy out. Arithmetic is float64 and the result is cast back to the
dtype of ``E``; α = 0 returns an exact copy of ``E`` (no arithmetic at all), so it is bit-identical.

Projection recipe (``Projection.from_seed(dim, seed, in_dim)``), so that anyone can rebuild it:
``G = numpy.random.default_rng(seed).standard_normal((in_dim, dim))`` (float64);
``Q, R = numpy.linalg.qr(G)`` (reduced); ``Q *= sign(diag(R))`` (makes the factorisation unique);
``P = Q.T`` — ``[dim, in_dim]`` with orthonormal rows. LAPACK builds may differ in the last bits.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from audiomemory.defaults import DEFAULT_STRENGTH
from audiomemory.orchestrator.pooling import STEM_ORDER, pool_stems
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput

__all__ = [
    "STEM_ORDER", "Fused", "Fusion", "Projection", "ReferenceStats", "audio_direction", "centre", "fuse",
    "pool_stems", "resolve_strength", "weigh_stems",
]

NORM_EPS = 1e-8  # ‖u‖ below this → no perturbation (§2 step 3)
_SIGMA_EPS = 1e-12  # a σ this small means "constant": the centred value is 0, never inf/NaN

T = TypeVar("T")


def _load_arrays(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read named arrays from ``.npz`` or ``.safetensors``; a missing required key is a clear error."""
    if not path.is_file():
        raise FailedPrecondition(f"file {str(path)!r} does not exist")
    arrays: dict[str, np.ndarray]
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        arrays = dict(load_file(str(path)))
    else:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise FailedPrecondition(f"file {str(path)!r} lacks {missing} (it holds {sorted(arrays)})")
    return {k: np.asarray(arrays[k], dtype=np.float64) for k in (*keys, *optional) if k in arrays}


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for arr in arrays:
        if arr is not None:
            h.update(str(arr.shape).encode())
            h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Projection:
    """``u = weight @ a_c (+ bias)``; ``weight [D, N]`` float64. ``identity`` names it in metadata."""

    weight: np.ndarray
    bias: np.ndarray | None
    identity: str

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[1])

    @classmethod
    def from_seed(cls, dim: int, seed: int, in_dim: int = 4096) -> Projection:
        """The deterministic random projection of the module docstring (cached per arguments)."""
        return _seeded_projection(int(dim), int(seed), int(in_dim))

    @classmethod
    def from_file(cls, path: str | Path) -> Projection:
        """Load ``weight [D, N]`` and optional ``bias [D]`` from ``.npz`` or ``.safetensors``."""
        path = Path(path)
        arrays = _load_arrays(path, ("weight",), ("bias",))
        weight, bias = arrays["weight"], arrays.get("bias")
        if weight.ndim != 2:
            raise FailedPrecondition(
                f"projection file {str(path)!r}: weight must be [D, N], got {weight.shape}"
            )
        if bias is not None and bias.shape != (weight.shape[0],):
            raise FailedPrecondition(
                f"projection file {str(path)!r}: bias must be [{weight.shape[0]}], got {bias.shape}"
            )
        if not (np.isfinite(weight).all() and (bias is None or np.isfinite(bias).all())):
            raise FailedPrecondition(f"projection file {str(path)!r} holds non-finite values")
        return cls(weight=weight, bias=bias, identity=f"file:{path.name}:{_digest(weight, bias)}")


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """LAPACK's QR on a busy small machine is >10x slower with one BLAS thread per core than with one
    in all (measured: 18 s vs 1.4 s for 4096x768 on the shared 2-core sandbox); results are the same."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


@functools.lru_cache(maxsize=8)
def _seeded_projection(dim: int, seed: int, in_dim: int) -> Projection:
    if not 0 < dim <= in_dim:
        raise FailedPrecondition(
            f"a projection with orthonormal rows needs 0 < D <= N; got D={dim}, N={in_dim}"
        )
    gaussian = np.random.default_rng(seed).standard_normal((in_dim, dim))
    with _one_blas_thread():
        q, r = np.linalg.qr(gaussian)
    q *= np.sign(np.diag(r))  # unique Q: R with a positive diagonal
    weight = np.ascontiguousarray(q.T)
    weight.setflags(write=False)
    return Projection(weight=weight, bias=None, identity=f"seed:{seed}")


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """Per-dimension μ and σ of the pooled audio vector over a reference set of songs."""

    mean: np.ndarray
    std: np.ndarray
    identity: str

    @classmethod
    def from_file(cls, path: str | Path) -> ReferenceStats:
        path = Path(path)
        arrays = _load_arrays(path, ("mean", "std"))
        mean, std = arrays["mean"], arrays["std"]
        if mean.ndim != 1 or mean.shape != std.shape:
            raise FailedPrecondition(
                f"reference statistics {str(path)!r}: mean and std must be [N] vectors of one shape, "
                f"got {mean.shape} and {std.shape}"
            )
        if not (np.isfinite(mean).all() and np.isfinite(std).all()) or (std < 0).any():
            raise FailedPrecondition(f"reference statistics {str(path)!r}: values must be finite, std >= 0")
        return cls(mean=mean, std=std, identity=f"file:{path.name}:{_digest(mean, std)}")


def centre(a: np.ndarray, stats: ReferenceStats | None = None) -> np.ndarray:
    """§2 step 1: ``(a − μ) / σ``, float64. Dimensions (or a whole vector) with σ ≈ 0 become 0."""
    a64 = np.asarray(a, dtype=np.float64).reshape(-1)
    if stats is None:
        sigma = float(a64.std())
        if sigma < _SIGMA_EPS:
            return np.zeros_like(a64)
        return (a64 - float(a64.mean())) / sigma
    if stats.mean.shape != a64.shape:
        raise FailedPrecondition(
            f"reference statistics have {stats.mean.shape[0]} dimensions but the audio vector has {a64.size}"
        )
    safe = np.where(stats.std < _SIGMA_EPS, 1.0, stats.std)
    return np.where(stats.std < _SIGMA_EPS, 0.0, (a64 - stats.mean) / safe)


def weigh_stems(a_c: np.ndarray, weights: Sequence[float] | None) -> np.ndarray:
    """§2 step 1b: ``a_w = w ⊙ a_c``, ``w`` repeating stem s's weight over its part of the vector (its mean and
    std: ``a_c.size / len(weights)`` values, stems in ``STEM_ORDER``). ``None`` or all 1: ``a_c`` itself,
    untouched (bit for bit)."""
    if weights is None or all(w == 1.0 for w in weights):
        return a_c
    if len(weights) != len(STEM_ORDER):
        raise FailedPrecondition(f"stem weights: one per stem {list(STEM_ORDER)}, got {len(weights)}")
    if a_c.size % len(weights):
        raise FailedPrecondition(
            f"the audio vector's {a_c.size} values do not split into {len(weights)} stems' equal parts"
        )
    return a_c * np.repeat(np.asarray(weights, dtype=np.float64), a_c.size // len(weights))


def audio_direction(
    a: np.ndarray, projection: Projection, stats: ReferenceStats | None = None,
    stem_weights: Sequence[float] | None = None,
) -> np.ndarray | None:
    """§2 steps 1–3: ``û = P a_w / ‖P a_w‖`` (float64 ``[D]``), or ``None`` when ``‖u‖ < 1e-8``; ``a_w`` is the
    centred vector with each stem's part weighted (``weigh_stems``; ``None`` = unweighted)."""
    a_c = weigh_stems(centre(a, stats), stem_weights)
    if projection.in_dim != a_c.size:
        raise FailedPrecondition(
            f"the projection takes {projection.in_dim}-d audio vectors but the pooled audio vector has "
            f"{a_c.size} values"
        )
    if not np.isfinite(a_c).all():
        raise InvalidInput("the audio vector holds non-finite values")
    u = projection.weight @ a_c
    if projection.bias is not None:
        u = u + projection.bias
    norm = float(np.linalg.norm(u))
    if norm < NORM_EPS:
        return None
    return u / norm


def validate_strength(alpha: float) -> float:
    """α must be a finite number in [0, 1]; returns it as a float."""
    value = float(alpha)
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidInput(f"strength (fusion alpha) must be in [0, 1], got {alpha!r}")
    return value


def fuse(
    embeddings: T,
    a: Any,
    alpha: float,
    *,
    projection: Projection | None = None,
    projection_seed: int = 0,
    stats: ReferenceStats | None = None,
    keep_bos: bool = False,
    stem_weights: Sequence[float] | None = None,
) -> T:
    """§2: ``E'_i = E_i + α‖E_i‖û`` for every token of ``embeddings [..., L, D]``.

    ``projection`` defaults to ``Projection.from_seed(D, projection_seed, a.size)``. With ``keep_bos``
    token 0 is left untouched; ``stem_weights`` (one per stem of ``STEM_ORDER``) weigh the centred vector's
    stems (step 1b). Returns the same dtype as ``embeddings``.
    """
    alpha = validate_strength(alpha)
    fused, _ = _fuse_numpy(np.asarray(embeddings), a, alpha, projection, projection_seed, stats, keep_bos,
                           stem_weights)
    return fused  # type: ignore[return-value]


def _fuse_numpy(
    e: np.ndarray, a: Any, alpha: float, projection: Projection | None, projection_seed: int,
    stats: ReferenceStats | None, keep_bos: bool, stem_weights: Sequence[float] | None = None,
) -> tuple[np.ndarray, bool]:
    """``fuse`` on numpy; also whether the audio steered (False for α = 0 or ``‖u‖ < 1e-8``)."""
    if e.ndim < 2 or e.shape[-1] == 0:
        raise InvalidInput(f"text embeddings must be [..., L, D], got shape {e.shape}")
    if alpha == 0.0:
        return e.copy(), False  # bit-identical by construction
    if projection is None:
        projection = Projection.from_seed(e.shape[-1], projection_seed, int(np.asarray(a).size))
    if projection.out_dim != e.shape[-1]:
        raise FailedPrecondition(
            f"the projection gives {projection.out_dim}-d directions but the text embeddings are "
            f"{e.shape[-1]}-d"
        )
    u_hat = audio_direction(a, projection, stats, stem_weights)
    if u_hat is None:
        return e.copy(), False
    e64 = e.astype(np.float64)
    norms = np.linalg.norm(e64, axis=-1, keepdims=True)
    fused = (e64 + alpha * norms * u_hat).astype(e.dtype)
    if keep_bos:
        fused[..., 0, :] = e[..., 0, :]
    return fused, True


def resolve_strength(value: float) -> float:
    """α rounded to float32, as the wire carries it: a default from configuration and a value a caller
    sent (and the one an image's metadata records and ``reproduce`` sends back) are the same number."""
    return float(np.float32(validate_strength(value)))


@dataclass(frozen=True)
class Fused:
    """The lyrics' embeddings with the audio fused in, and whether the audio moved them at all."""

    embeddings: np.ndarray
    steered: bool
    projection: str  # the projection's identity (metadata)


@dataclass(frozen=True, eq=False)
class Fusion:
    """The orchestrator's fusion settings: a projection file (else one seeded per job), reference
    statistics for centring (else the vector's own), and the defaults a request may leave out."""

    projection: Projection | None = None
    stats: ReferenceStats | None = None
    default_strength: float = DEFAULT_STRENGTH
    default_projection_seed: int = 0

    @classmethod
    def from_files(
        cls, projection_file: Path | None, reference_stats: Path | None, *, default_strength: float,
        default_projection_seed: int,
    ) -> Fusion:
        return cls(
            projection=Projection.from_file(projection_file) if projection_file else None,
            stats=ReferenceStats.from_file(reference_stats) if reference_stats else None,
            default_strength=resolve_strength(default_strength),
            default_projection_seed=default_projection_seed,
        )

    def projection_for(self, dim: int, seed: int, in_dim: int) -> Projection:
        """The projection a job uses: the file's, or the seeded one for (dim, seed, in_dim)."""
        return self.projection or Projection.from_seed(dim, seed, in_dim)

    def apply(
        self, embeddings: np.ndarray, a: np.ndarray, strength: float, *, projection_seed: int, keep_bos: bool,
        stem_weights: Sequence[float] | None = None,
    ) -> Fused:
        """§2 on ``embeddings [1, L, D]`` with the pooled audio vector ``a`` (``stem_weights``: step 1b)."""
        projection = self.projection_for(embeddings.shape[-1], projection_seed, int(a.size))
        fused, steered = _fuse_numpy(
            np.asarray(embeddings), a, validate_strength(strength), projection, projection_seed, self.stats, keep_bos,
            stem_weights,
        )
        return Fused(fused, steered, projection.identity)
