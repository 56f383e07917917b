"""Separate over real gRPC with the tiny HTDemucs: stem names, count, lengths and the asked format."""

from __future__ import annotations

import numpy as np
import pytest

from audiomemory.runtime.service import RunningService
from audiomemory.v1 import common_pb2, separator_pb2_grpc, tensor_pb2

from .streams import collect, output, requests, tone

STEMS = ["drums", "bass", "other", "vocals"]


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [22050, 44100, 48000])
def test_every_stem_comes_back_named_and_as_long_as_the_input(
    stub: separator_pb2_grpc.SeparatorStub, rate: int, channels: int
) -> None:
    audio = tone(rate, channels, 1.3)
    got = collect(stub.Separate(requests(audio, rate)))
    # Native format: the model's rate (44.1 kHz) and channels (2), float32.
    frames = round(audio.shape[1] * 44100 / rate)
    assert list(got.header.stems) == STEMS
    assert (got.header.sample_rate, got.header.channels, got.header.frames) == (44100, 2, frames)
    assert got.header.dtype == tensor_pb2.DTYPE_FLOAT32
    assert list(got.stems) == STEMS
    for stem in got.stems.values():
        assert stem.shape == (2, frames)
        assert np.isfinite(stem).all() and np.abs(stem).max() > 0


@pytest.mark.parametrize(
    ("rate", "channels", "dtype", "wire"),
    [
        (48000, 1, tensor_pb2.DTYPE_FLOAT16, tensor_pb2.DTYPE_FLOAT16),  # what OpenL3 wants
        (22050, 2, tensor_pb2.DTYPE_FLOAT32, tensor_pb2.DTYPE_FLOAT32),
        (44100, 1, tensor_pb2.DTYPE_UNSPECIFIED, tensor_pb2.DTYPE_FLOAT32),
    ],
)
def test_stems_arrive_in_the_format_the_caller_asked_for(
    stub: separator_pb2_grpc.SeparatorStub, rate: int, channels: int,
    dtype: tensor_pb2.DType.ValueType, wire: tensor_pb2.DType.ValueType,
) -> None:
    audio = tone(32000, 2, 1.0)
    got = collect(stub.Separate(requests(audio, 32000, output=output(rate, channels, dtype))))
    frames = round(audio.shape[1] * rate / 32000)  # same duration as the input, at the output rate
    header = got.header
    assert (header.sample_rate, header.channels, header.dtype, header.frames) == (rate, channels, wire, frames)
    assert got.wire_dtypes == {wire}
    assert all(stem.shape == (channels, frames) for stem in got.stems.values())


def test_mono_float16_output_is_the_mean_of_the_native_stereo_stems(stub: separator_pb2_grpc.SeparatorStub) -> None:
    audio = tone(44100, 2, 1.0, seed=3)
    native = collect(stub.Separate(requests(audio, 44100)))
    mono16 = collect(stub.Separate(requests(audio, 44100, output=output(44100, 1, tensor_pb2.DTYPE_FLOAT16))))
    for name in STEMS:
        expected = native.stems[name].mean(axis=0, keepdims=True)
        np.testing.assert_allclose(mono16.stems[name], expected, atol=2e-3 * np.abs(expected).max() + 1e-4)


def test_float16_input_is_accepted_and_separates_like_float32(stub: separator_pb2_grpc.SeparatorStub) -> None:
    audio = tone(44100, 2, 1.0, seed=4)
    as32 = collect(stub.Separate(requests(audio, 44100)))
    as16 = collect(stub.Separate(requests(audio, 44100, dtype="float16")))
    for name in STEMS:
        scale = np.abs(as32.stems[name]).max()
        np.testing.assert_allclose(as16.stems[name], as32.stems[name], atol=0.02 * scale)


def test_long_input_streams_in_many_messages_each_under_one_mebibyte(
    stub: separator_pb2_grpc.SeparatorStub,
) -> None:
    audio = tone(44100, 2, 8.0)  # 2.8 MB in, 11 MB of stems out
    got = collect(stub.Separate(requests(audio, 44100, chunk_bytes=256 * 1024)))
    assert got.largest_message <= 1 << 20
    assert all(stem.shape == (2, audio.shape[1]) for stem in got.stems.values())


def test_describe_reports_the_loaded_model(
    stub: separator_pb2_grpc.SeparatorStub, separator: RunningService, request: pytest.FixtureRequest
) -> None:
    backend = getattr(request.module, "SEPARATOR_BACKEND", "demucs")  # test_separate_openvino.py: openvino
    info = stub.Describe(common_pb2.DescribeRequest())
    assert list(info.stems) == STEMS
    assert (info.sample_rate, info.channels) == (44100, 2)
    assert info.max_input_frames == 1200 * 44100
    assert info.max_input_bytes == 1200 * 44100 * 2 * 4  # derived: those frames as stereo float32
    model = info.model
    assert (model.service, model.backend, model.model_id, model.device) == ("separator", backend, "tiny", "cpu")
    assert model.revision.startswith("sha256:") and len(model.revision) == len("sha256:") + 16
    assert model.extra["class"] == "HTDemucs" and model.extra["stems"] == ",".join(STEMS)
    assert model.extra["segment"] == "2"  # the tiny model's own training segment, read from it
