"""The openl3 backend without gRPC: same embeddings as torchopenl3, batched framing, loading paths."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2
from helpers import GatedLoad, health

from audiomemory.audio_encoder.backends import int8, openl3
from audiomemory.audio_encoder.backends.int8 import calibration_windows, quantise_int8, resolve_precision
from audiomemory.audio_encoder.backends.openl3 import OpenL3Backend, cnn_layers, lean_forward, window_spectrograms
from audiomemory.audio_encoder.config import AudioEncoderConfig
from audiomemory.runtime.errors import Cancelled, FailedPrecondition, InvalidInput
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import audio_encoder_pb2_grpc, common_pb2

from .streams import collect, requests, tone

SERVICE = "audiomemory.v1.AudioEncoder"


@pytest.fixture(scope="module")
def backend(tiny_encoder: dict[str, Any]) -> OpenL3Backend:
    loaded = OpenL3Backend(AudioEncoderConfig(hop_seconds=0.5, precision="float32", **tiny_encoder))
    loaded.load()
    return loaded


def test_embeddings_equal_torchopenl3_on_the_same_weights(backend: OpenL3Backend) -> None:
    import torchopenl3

    audio = tone(48000, 1, 0.8, seed=5)
    ours, timestamps = backend.embed(audio, 48000)
    theirs, _ = torchopenl3.get_audio_embedding(
        audio[0], 48000, model=backend._model, center=True, hop_size=0.5, batch_size=32, verbose=False
    )
    assert ours.shape == tuple(theirs.shape[1:]) == (2, 512)
    assert np.abs(ours - theirs[0].numpy()).max() <= 1e-4
    np.testing.assert_array_equal(timestamps, [0.0, 0.5])


class Recorder:
    """Stands in for the CNN (0.3–0.8 s a frame) to watch how a 20-minute input is fed to it."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.batches: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.shape[0])
        # The `dim` samples around the window's centre, so a test can see which audio a frame holds.
        centre = batch.shape[-1] // 2
        return batch[:, centre - self.dim // 2 : centre + self.dim // 2].copy()


def test_twenty_minutes_is_fed_in_batches_with_frame_i_centred_at_i_hops(
    backend: OpenL3Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixed = {"hop_seconds": 0.1, "hop_growth_seconds": 0, "batch_size": 128}
    monkeypatch.setattr(backend, "config", backend.config.model_copy(update=fixed))
    recorder = Recorder(backend.embedding_dim)
    monkeypatch.setattr(backend, "embed_windows", recorder)
    audio = np.zeros((1, 48000 * 1200), np.float32)
    audio[0, ::4800] = np.arange(12000, dtype=np.float32)  # a marker at every hop
    embeddings, timestamps = backend.embed(audio, 48000)
    assert embeddings.shape == (11996, 512) and timestamps[-1] == pytest.approx(1199.5)
    assert max(recorder.batches) == 128 and sum(recorder.batches) == 11996
    # Frame i is centred on i·hop: its middle sample (index 24000) is marker i.
    assert embeddings[:100, 256].tolist() == list(range(100))
    assert embeddings[11995, 256] == 11995


def test_callers_read_only_array_is_left_unchanged(backend: OpenL3Backend) -> None:
    audio = tone(44100, 2, 0.3)
    before = audio.copy()
    audio.setflags(write=False)
    backend.embed(audio, 44100)
    np.testing.assert_array_equal(audio, before)


@pytest.mark.parametrize(
    ("audio", "rate", "needle"),
    [
        (np.zeros((3, 10), np.float32), 48000, "1 or 2 channels, got 3"),
        (np.zeros((1, 0), np.float32), 48000, "empty"),
        (np.zeros((1, 10), np.float64), 48000, "float32"),
        (np.full((1, 10), np.inf, np.float32), 48000, "finite"),
        (np.zeros((1, 10), np.float32), -1, "sample_rate"),
    ],
)
def test_bad_arrays_raise_invalid_input(backend: OpenL3Backend, audio: np.ndarray, rate: int, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        backend.embed(audio, rate)


def test_cancel_check_stops_between_batches(backend: OpenL3Backend) -> None:
    with pytest.raises(Cancelled):
        backend.embed(tone(48000, 1, 0.3), 48000, cancelled=lambda: True)


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
def test_fast_precisions_keep_frames_within_cosine_0999_of_float32(
    backend: OpenL3Backend, tiny_encoder: dict[str, Any], precision: str
) -> None:
    fast = OpenL3Backend(AudioEncoderConfig(hop_seconds=0.5, precision=precision, **tiny_encoder))
    fast.load()
    # One frame (0.4 s: one window): on a CPU without native bf16 the emulated bf16 CNN takes ~25 s a window.
    audio = tone(44100, 2, 0.4, seed=7)
    ref, _ = backend.embed(audio, 44100)
    got, _ = fast.embed(audio, 44100)
    assert (backend.precision, fast.precision) == ("float32", precision)
    assert fast.describe().extra["precision"] == precision and fast.describe().dtype == precision
    cosine = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert ref.shape == got.shape == (1, 512)
    assert cosine.min() >= 0.999, cosine
    assert np.abs(ref - got).max() > 0  # really computed in another precision


def test_int8_is_the_same_model_on_every_load_and_leaves_the_float_weights_alone(
    backend: OpenL3Backend, tiny_encoder: dict[str, Any], tmp_path: Path
) -> None:
    model = backend._loaded()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.from_numpy(tone(48000, 1, 1.0, seed=3))[None]
    cnn, ranges = cnn_layers(model), tmp_path / "ranges.pt"
    windows = window_spectrograms(model, calibration_windows(4))
    others = window_spectrograms(model, calibration_windows(4, seed=1))

    def frames(quantised: torch.nn.Module) -> torch.Tensor:
        with torch.inference_mode():
            return lean_forward(model, x, quantised=quantised)

    calibrated = frames(quantise_int8(cnn, windows))
    assert torch.equal(frames(quantise_int8(cnn, windows, ranges)), calibrated) and ranges.is_file()
    # Read back (other windows would give other ranges: these are ignored when the file is there).
    assert torch.equal(frames(quantise_int8(cnn, others, ranges)), calibrated)
    assert not torch.equal(frames(quantise_int8(cnn, others)), calibrated)
    ranges.write_bytes(b"not a tensor file")  # unreadable: calibrates again, same model
    assert torch.equal(frames(quantise_int8(cnn, windows, ranges)), calibrated)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # The service keeps its ranges beside the weights, and a second load (reading them) embeds the same.
    first, second = (OpenL3Backend(AudioEncoderConfig(hop_seconds=0.5, precision="int8", **tiny_encoder))
                     for _ in range(2))
    first.load()
    assert first.int8_ranges_file(first._file, first._sha).is_file()
    second.load()
    audio = tone(48000, 1, 1.5, seed=3)
    assert np.array_equal(first.embed(audio, 48000)[0], second.embed(audio, 48000)[0])
    assert "int8_calibration" in first.describe().extra


@pytest.mark.parametrize(
    ("precision", "device", "flags", "expected"),
    [
        ("auto", "cpu", {"avx512_bf16", "avx512_vnni"}, "int8"),
        ("auto", "cpu", {"avx512_bf16"}, "bfloat16"),
        ("auto", "cpu", {"avx2"}, "float32"),
        ("auto", "cuda", {"avx512_bf16", "avx512_vnni"}, "float32"),
        ("float32", "cpu", {"avx512_bf16", "avx512_vnni"}, "float32"),
        ("bfloat16", "cpu", {"avx512_vnni"}, "bfloat16"),
        ("int8", "cpu", set(), "int8"),
    ],
)
def test_auto_precision_is_int8_with_vnni_then_bfloat16_with_native_bf16(
    precision: str, device: str, flags: set[str], expected: str
) -> None:
    if expected == "int8" and not int8.x86_int8_engine():
        pytest.skip("this torch build has no x86 quantised engine")
    assert resolve_precision(precision, torch.device(device), frozenset(flags)) == expected


def test_int8_on_cuda_is_refused_naming_the_device() -> None:
    with pytest.raises(FailedPrecondition, match="int8 runs on the CPU only"):
        resolve_precision("int8", torch.device("cuda"))


def test_int8_without_the_x86_engine_is_refused_naming_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int8, "x86_int8_engine", lambda: False)
    with pytest.raises(FailedPrecondition, match=r"x86 quantised engine.*use auto, bfloat16 or float32"):
        resolve_precision("int8", torch.device("cpu"))
    assert not int8.cpu_has_int8_dot()  # so auto never picks it there
    assert resolve_precision("auto", torch.device("cpu"), frozenset({"avx512_vnni", "avx512_bf16"})) == "bfloat16"


@pytest.mark.parametrize(
    ("seconds", "growth", "expected"),
    [(10, 30, 0.1), (30, 30, 0.1), (60, 30, 0.14), (210, 30, 0.26), (1200, 30, 0.5), (1200, 0, 0.1)],
)
def test_the_hop_grows_with_the_square_root_of_the_length(
    tiny_encoder: dict[str, Any], seconds: float, growth: float, expected: float
) -> None:
    config = AudioEncoderConfig(hop_seconds=0.1, hop_growth_seconds=growth, max_hop_seconds=0.5, **tiny_encoder)
    assert OpenL3Backend(config).hop_for(seconds) == round(expected * 48000)


class GatedOpenL3(GatedLoad, OpenL3Backend):
    """The real backend, whose load waits until the test releases it."""


def test_health_is_not_serving_until_the_model_has_loaded(
    start_encoder: Callable[..., RunningService], tiny_encoder: dict[str, Any]
) -> None:
    config = AudioEncoderConfig(port=0, hop_seconds=1.0, **tiny_encoder)
    backend = GatedOpenL3(config)
    hub_dir = torch.hub.get_dir()
    svc = start_encoder(config, backend, wait=False)
    with grpc.insecure_channel(svc.address) as channel:
        stub = audio_encoder_pb2_grpc.AudioEncoderStub(channel)
        for name in ("", SERVICE):
            assert health(channel, name) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Embed(requests(tone(48000, 1, 0.2), 48000), timeout=5))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        backend.release.set()
        svc.wait_ready(30)
        for name in ("", SERVICE):
            assert health(channel, name) == health_pb2.HealthCheckResponse.SERVING
        assert stub.Describe(common_pb2.DescribeRequest(), timeout=5).embedding_dim == 512
        assert list(collect(stub.Embed(requests(tone(48000, 1, 0.2), 48000))).end.frames) == [1]  # type: ignore[union-attr]
    # weights_dir was handed to the loader, not set as TORCH_HOME for every library in the process.
    assert torch.hub.get_dir() == hub_dir


def test_missing_weights_offline_fail_within_five_seconds_naming_them_and_the_fix(
    empty_caches: Path, start_encoder: Callable[..., RunningService]
) -> None:
    started = time.perf_counter()
    svc = start_encoder(AudioEncoderConfig(port=0), wait=False)  # default weights dir: $TORCH_HOME/hub
    with pytest.raises(FailedPrecondition) as caught:
        svc.wait_ready(10)
    assert time.perf_counter() - started < 5
    message = str(caught.value)
    assert "'openl3-music-mel256-512'" in message and "torchopenl3_mel256_music_512.pth.tar" in message
    assert str(empty_caches / "torch") in message
    assert "audiomemory models pull" in message and "--models tiny" in message
    with grpc.insecure_channel(svc.address) as channel:
        assert health(channel, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("input_repr", ["mel256", "mel128", "linear"])
def test_fft_spectrogram_equals_torchopenl3s_dft_convolution(input_repr: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa: empty mel filters at 256 bands, as OpenL3 was trained
        from torchopenl3.models import PytorchOpenl3

        layer = PytorchOpenl3(content_type="music", input_repr=input_repr, embedding_size=512).speclayer
    x = torch.from_numpy(tone(48000, 1, 1.0, seed=8)[None])
    with torch.inference_mode():
        ours, theirs = openl3.spectrogram(layer, x), layer(x)
    assert ours.shape == theirs.shape
    # dB on an 80-dB scale: float32 rounding of two ways to sum 2048 products, largest in quiet bins.
    assert (ours - theirs).abs().max() <= 0.02 and (ours - theirs).abs().mean() <= 1e-4
