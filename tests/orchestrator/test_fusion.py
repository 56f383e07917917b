"""DESIGN.md §2 invariants of the fusion, property-based where a property is the contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiomemory.orchestrator.fusion import (
    STEM_ORDER,
    Projection,
    ReferenceStats,
    audio_direction,
    centre,
    fuse,
    pool_stems,
)
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput

D = 32  # a small text dim keeps the QR cheap; the contract does not depend on D
N = 64  # pooled audio length for these tests (4 stems x 2 stats x 8)

seeds = st.integers(min_value=0, max_value=2**32 - 1)
alphas = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def _embeddings(seed: int, tokens: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, tokens, D)).astype(np.float32) * 3


def _audio(seed: int) -> np.ndarray:
    # OpenL3-like: non-negative features
    return np.abs(np.random.default_rng(seed + 1).standard_normal(N)).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(seed=seeds)
def test_alpha_zero_leaves_embeddings_bit_identical(seed: int) -> None:
    e = _embeddings(seed)
    out = fuse(e, _audio(seed), 0.0)
    assert out.dtype == e.dtype
    assert out.tobytes() == e.tobytes()
    assert out is not e


@settings(max_examples=40, deadline=None)
@given(seed=seeds, alpha=alphas, keep_bos=st.booleans())
def test_every_token_stays_within_the_cosine_bound(seed: int, alpha: float, keep_bos: bool) -> None:
    e = _embeddings(seed)
    out = fuse(e, _audio(seed), alpha, projection_seed=seed % 7, keep_bos=keep_bos).astype(np.float64)
    e64 = e.astype(np.float64)
    cos = (out * e64).sum(-1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(e64, axis=-1))
    assert (cos >= np.sqrt(1 - alpha**2) - 1e-6).all()
    if keep_bos:
        assert out[0, 0].tobytes() == e64[0, 0].tobytes()


@settings(max_examples=15, deadline=None)
@given(seed=seeds, alpha=st.floats(min_value=0.01, max_value=1.0))
def test_fusion_is_deterministic(seed: int, alpha: float) -> None:
    e, a = _embeddings(seed), _audio(seed)
    assert fuse(e, a, alpha, projection_seed=3).tobytes() == fuse(e, a, alpha, projection_seed=3).tobytes()


@settings(max_examples=15, deadline=None)
@given(seed=seeds, alpha=st.floats(min_value=0.01, max_value=1.0))
def test_perturbation_has_the_promised_size_along_u_hat(seed: int, alpha: float) -> None:
    e, a = _embeddings(seed), _audio(seed)
    p = Projection.from_seed(D, 0, N)
    u_hat = audio_direction(a, p)
    assert u_hat is not None
    delta = fuse(e, a, alpha, projection=p).astype(np.float64) - e
    expected = alpha * np.linalg.norm(e.astype(np.float64), axis=-1, keepdims=True) * u_hat
    np.testing.assert_allclose(delta, expected, rtol=1e-4, atol=1e-5)


def _direction(a: np.ndarray, p: Projection) -> np.ndarray:
    u_hat = audio_direction(a, p)
    assert u_hat is not None
    return u_hat


def _stems(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: np.abs(rng.standard_normal((5 + i, N // 8))) for i, name in enumerate(STEM_ORDER)}


@settings(max_examples=15, deadline=None)
@given(seed=seeds)
def test_reordering_stems_changes_the_direction(seed: int) -> None:
    stems = _stems(seed)
    p = Projection.from_seed(D, 0, N)
    a = pool_stems(stems)
    swapped = pool_stems(stems, order=("drums", "vocals", "bass", "other"))
    assert not np.allclose(_direction(a, p), _direction(swapped, p))


@settings(max_examples=15, deadline=None)
@given(seed=seeds)
def test_changing_the_audio_changes_the_direction(seed: int) -> None:
    p = Projection.from_seed(D, 0, N)
    a = _audio(seed)
    b = a.copy()
    b[seed % N] += 1.0
    assert not np.allclose(_direction(a, p), _direction(b, p))


@settings(max_examples=10, deadline=None)
@given(seed=seeds, pseed=st.integers(0, 1000))
def test_changing_the_projection_seed_changes_the_direction(seed: int, pseed: int) -> None:
    a = _audio(seed)
    one = _direction(a, Projection.from_seed(D, pseed, N))
    other = _direction(a, Projection.from_seed(D, pseed + 1, N))
    assert not np.allclose(one, other)


def test_seeded_projection_has_orthonormal_rows_and_follows_the_documented_recipe() -> None:
    p = Projection.from_seed(D, 5, N)
    np.testing.assert_allclose(p.weight @ p.weight.T, np.eye(D), atol=1e-12)
    q, r = np.linalg.qr(np.random.default_rng(5).standard_normal((N, D)))
    np.testing.assert_array_equal(p.weight, (q * np.sign(np.diag(r))).T)


def test_default_projection_is_768_by_4096_with_orthonormal_rows() -> None:
    p = Projection.from_seed(768, 0)
    assert p.weight.shape == (768, 4096)
    np.testing.assert_allclose(p.weight @ p.weight.T, np.eye(768), atol=1e-10)


def test_constant_audio_vector_gives_no_perturbation() -> None:
    e = _embeddings(1)
    out = fuse(e, np.full(N, 0.5, np.float32), 0.7)
    assert out.tobytes() == e.tobytes()


def test_tiny_projected_vector_gives_no_perturbation(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    np.savez(path, weight=np.zeros((D, N)))
    e = _embeddings(2)
    assert fuse(e, _audio(2), 0.5, projection=Projection.from_file(path)).tobytes() == e.tobytes()


def test_projection_file_with_bias_is_used(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight, bias = rng.standard_normal((D, N)), rng.standard_normal(D)
    np.savez(tmp_path / "p.npz", weight=weight, bias=bias)
    p = Projection.from_file(tmp_path / "p.npz")
    a = _audio(0)
    u = weight @ centre(a) + bias
    np.testing.assert_allclose(_direction(a, p), u / np.linalg.norm(u))
    assert p.identity.startswith("file:p.npz:")


def test_projection_file_in_safetensors_loads(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    weight = np.random.default_rng(1).standard_normal((D, N)).astype(np.float32)
    save_file({"weight": weight}, str(tmp_path / "p.safetensors"))
    p = Projection.from_file(tmp_path / "p.safetensors")
    np.testing.assert_array_equal(p.weight, weight.astype(np.float64))


def test_projection_file_of_the_wrong_shape_is_a_failed_precondition(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", weight=np.ones((D, N + 1)))
    with pytest.raises(FailedPrecondition, match=str(N + 1)):
        fuse(_embeddings(0), _audio(0), 0.3, projection=Projection.from_file(tmp_path / "p.npz"))
    np.savez(tmp_path / "q.npz", bias=np.ones(D))
    with pytest.raises(FailedPrecondition, match="weight"):
        Projection.from_file(tmp_path / "q.npz")


def test_reference_statistics_centre_per_dimension(tmp_path: Path) -> None:
    mean, std = np.linspace(0, 1, N), np.linspace(1, 2, N)
    std[3] = 0.0  # a dead dimension centres to 0 rather than inf
    np.savez(tmp_path / "s.npz", mean=mean, std=std)
    stats = ReferenceStats.from_file(tmp_path / "s.npz")
    a = _audio(4).astype(np.float64)
    c = centre(a, stats)
    assert c[3] == 0.0
    np.testing.assert_allclose(np.delete(c, 3), np.delete((a - mean) / np.where(std == 0, 1, std), 3))
    # and with no statistics: the scalar mean and std of a itself
    np.testing.assert_allclose(centre(a), (a - a.mean()) / a.astype(np.float64).std(), rtol=1e-6)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), float("inf")])
def test_strength_outside_zero_one_is_invalid(alpha: float) -> None:
    with pytest.raises(InvalidInput, match="strength"):
        fuse(_embeddings(0), _audio(0), alpha)


def test_pooling_is_mean_then_population_std_in_fixed_stem_order() -> None:
    stems = _stems(3)
    a = pool_stems(dict(reversed(list(stems.items()))))  # dict order must not matter
    k = N // 8
    for i, name in enumerate(STEM_ORDER):
        np.testing.assert_allclose(a[2 * i * k : (2 * i + 1) * k], stems[name].mean(0), rtol=1e-6)
        std = a[(2 * i + 1) * k : (2 * i + 2) * k]
        np.testing.assert_allclose(std, stems[name].std(0, ddof=0), rtol=1e-6)
    assert a.shape == (N,) and a.dtype == np.float32


def test_pooling_names_missing_stems() -> None:
    stems = _stems(0)
    del stems["bass"]
    with pytest.raises(FailedPrecondition, match="bass"):
        pool_stems(stems)
