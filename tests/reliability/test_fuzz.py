"""Hypothesis fuzzing: the tensor codec, the audio decoder, and every servicer's request parsing over gRPC.

Whatever comes, the codec and the decoder either return a well-formed result or raise the project's
``InvalidInput``/``ResourceExhausted`` naming the field; a service answers one of the deliberate statuses,
never UNKNOWN or INTERNAL, and still answers health SERVING. ``AUDIOMEMORY_FUZZ_EXAMPLES`` examples per
target (default 25 in `make test`: ten targets, 250 in all; 1050 each in `make reliability-tests`); the figure
each target ran is printed at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from orchestrator.songs import encode_song

from audiomemory.orchestrator.decode import decode_audio
from audiomemory.runtime.audio import AudioAssembler, max_audio_bytes
from audiomemory.runtime.codec import assemble_tensor, from_tensor, to_tensor
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.v1 import (
    audio_encoder_pb2,
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    orchestrator_pb2,
    tensor_pb2,
)

from .catalogue import MAX_CHARS, MAX_TEXTS, Call, embed, encode, separate
from .catalogue_front import SHORT_WAV, job
from .conftest import FIGURES, assert_serving
from .fuzz_strategies import (
    NOT_FINITE,
    RANDOM_FILES,
    audio_chunks,
    audio_streams,
    chunk_streams,
    expected_specs,
    image_options,
    mutations,
    one_broken,
    raw_tensors,
    separate_options,
    tensors,
    values,
)

EXAMPLES = int(os.environ.get("AUDIOMEMORY_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
REFUSALS = (InvalidInput, ResourceExhausted)
DELIBERATE = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.CANCELLED,
}
MAX_MESSAGE = 400
MAX_SECONDS = 8.0  # the decoder's limit here, as the orchestrator fixture's
SONGS = {ext: encode_song(ext, 8000, 1, seconds=0.3) for ext in ("wav", "flac", "mp3")}


def refused(exc: Exception, field: str) -> None:
    """A refusal names ``field`` first and stays a sentence."""
    assert str(exc).startswith(field) and len(str(exc)) < MAX_MESSAGE, str(exc)


def answered(channel: grpc.Channel, call: Call) -> grpc.StatusCode:
    """Run ``call``: its status must be a deliberate one, and the service must still be SERVING."""
    try:
        call(channel)
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code = exc.code()
        assert code in DELIBERATE, f"{code}: {exc.details()}"
        assert len(exc.details() or "") < MAX_MESSAGE
    assert_serving(channel)
    return code


# -- the tensor codec --------------------------------------------------------------------------------
@FUZZ
@given(msg=tensors(), spec=expected_specs())
# Shapes numpy cannot make, even of no items: they raised ValueError before codec._check_header refused them.
@example(msg=tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[1] * 65), spec={})
@example(msg=tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[0, 2**62]), spec={"shape": [None, None]})
def test_codec_decodes_any_tensor_or_refuses_it_naming_the_field(msg: tensor_pb2.Tensor, spec: dict[str, Any]) -> None:
    FIGURES["fuzz"]["codec.tensor"] += 1
    try:
        arr = from_tensor(msg, field="t", **spec)
    except REFUSALS as exc:
        refused(exc, "t")
        return
    assert arr.shape == tuple(msg.shape) and arr.tobytes() == msg.data
    if spec.get("finite"):
        assert np.isfinite(arr.astype(np.float64)).all()


@FUZZ
@given(chunks=chunk_streams(), spec=expected_specs())
def test_codec_reassembles_chunks_in_order_or_refuses_them(
    chunks: list[tensor_pb2.TensorChunk], spec: dict[str, Any]
) -> None:
    FIGURES["fuzz"]["codec.chunks"] += 1
    spec.setdefault("max_bytes", 4096)
    try:
        arr = assemble_tensor(iter(chunks), "t", **spec)
    except REFUSALS as exc:
        refused(exc, "t")
        return
    assert arr.shape == tuple(chunks[0].shape) and arr.tobytes() == b"".join(c.data for c in chunks)
    assert [c.offset for c in chunks] == sorted(c.offset for c in chunks)


@FUZZ
@given(chunks=st.lists(audio_chunks(), max_size=4), max_frames=st.integers(0, 200))
def test_audio_assembler_keeps_finite_audio_within_its_caps_or_refuses(
    chunks: list[tensor_pb2.AudioChunk], max_frames: int
) -> None:
    FIGURES["fuzz"]["codec.audio"] += 1
    assembler = AudioAssembler("audio", max_frames=max_frames, max_bytes=max_audio_bytes(max_frames))
    try:
        for chunk in chunks:
            assembler.add(chunk)
        samples, rate = assembler.result()
    except REFUSALS as exc:
        refused(exc, "audio")
        return
    assert samples.dtype == np.float32 and samples.shape[0] in (1, 2) and 0 < samples.shape[1] <= max_frames
    assert np.isfinite(samples).all() and rate == chunks[0].sample_rate


# -- the audio decoder -------------------------------------------------------------------------------
def decoded_or_refused(data: bytes) -> None:
    try:
        song = decode_audio(data, max_bytes=1 << 20, max_seconds=MAX_SECONDS)
    except REFUSALS as exc:
        refused(exc, "file")
        return
    assert song.samples.dtype == np.float32 and song.samples.flags.c_contiguous and song.channels in (1, 2)
    assert song.frames > 0 and song.seconds <= MAX_SECONDS + 1 and np.isfinite(song.samples).all()


@FUZZ
@given(data=RANDOM_FILES)
def test_decoder_reads_random_bytes_or_refuses_them(data: bytes) -> None:
    FIGURES["fuzz"]["decode.random"] += 1
    decoded_or_refused(data)


@FUZZ
@given(data=st.sampled_from(sorted(SONGS)).flatmap(lambda ext: mutations(SONGS[ext])))
def test_decoder_reads_mutated_songs_or_refuses_them(data: bytes) -> None:
    FIGURES["fuzz"]["decode.mutated"] += 1
    decoded_or_refused(data)


# -- each servicer over gRPC -------------------------------------------------------------------------
@FUZZ
@given(options=st.none() | separate_options(), at=st.integers(0, 3),
       chunks=st.sampled_from([8000, 44100]).flatmap(audio_streams))
def test_separator_answers_any_request_stream_deliberately(
    channels: dict[str, grpc.Channel], options: Any, at: int, chunks: list[tensor_pb2.AudioChunk]
) -> None:
    FIGURES["fuzz"]["grpc.separator"] += 1
    items: list[Any] = list(chunks)
    if options is not None:
        items.insert(min(at, len(items)), options)
    answered(channels["separator"], separate(*items))


@FUZZ
@given(options=st.none() | st.builds(audio_encoder_pb2.EmbedOptions, signals=st.integers(-1, 9),
                                     input_frames=st.sampled_from([-1, 0, 64, 10**12]), timestamps=st.booleans()),
       chunks=st.sampled_from([16000, 48000]).flatmap(audio_streams),
       signals=st.lists(st.integers(-1, 2), min_size=3, max_size=3))
def test_audio_encoder_answers_any_request_stream_deliberately(
    channels: dict[str, grpc.Channel], options: Any, chunks: list[tensor_pb2.AudioChunk], signals: list[int]
) -> None:
    FIGURES["fuzz"]["grpc.audio_encoder"] += 1
    requests = [audio_encoder_pb2.EmbedRequest(audio=c, signal=s) for c, s in zip(chunks, signals, strict=False)]
    if options is not None:
        requests.insert(0, audio_encoder_pb2.EmbedRequest(options=options))
    answered(channels["audio_encoder"], embed(*requests))


@FUZZ
@given(texts=st.lists(st.text(max_size=30) | st.sampled_from(["x" * (MAX_CHARS + 1), "\U0001f3b5" * MAX_CHARS]),
                      max_size=MAX_TEXTS + 2))
def test_text_encoder_answers_any_texts_deliberately(channels: dict[str, grpc.Channel], texts: list[str]) -> None:
    FIGURES["fuzz"]["grpc.text_encoder"] += 1
    code = answered(channels["text_encoder"], encode(*texts))
    assert (code == grpc.StatusCode.OK) == (0 < len(texts) <= MAX_TEXTS and all(len(t) <= MAX_CHARS for t in texts))


@pytest.fixture(scope="module")
def generator_info(channels: dict[str, grpc.Channel]) -> Iterator[generator_pb2.GeneratorInfo]:
    yield generator_pb2_grpc.GeneratorStub(channels["generator"]).Describe(common_pb2.DescribeRequest(), timeout=30)


def embeddings(dim: int, tokens: int) -> st.SearchStrategy[tensor_pb2.Tensor]:
    """Finite [1, tokens, D] float32 or float16."""
    return st.sampled_from([np.float32, np.float16]).flatmap(lambda dtype: hnp.arrays(
        np.float32, (1, tokens, dim), elements=st.floats(-4, 4, width=16)).map(lambda a: to_tensor(a.astype(dtype))))


def bad_embeddings(dim: int, tokens: int) -> st.SearchStrategy[tensor_pb2.Tensor | None]:
    """None, any tensor, or [1, L, D] off in one way: no tokens, another length, another D, NaN/Inf, a dtype."""
    off = st.sampled_from([(0, dim), (tokens + 1, dim), (tokens, dim + 1), (tokens, dim - 1)])
    return st.one_of(
        st.none(), raw_tensors(max_rank=4),
        off.flatmap(lambda shape: hnp.arrays(np.float32, (1, *shape)).map(to_tensor)),
        st.sampled_from(NOT_FINITE).map(lambda v: to_tensor(np.full((1, tokens, dim), v, np.float32))),
        st.sampled_from([np.float64, np.int32]).map(lambda t: to_tensor(np.zeros((1, tokens, dim), t))),
    )


@FUZZ
@given(data=st.data(), tokens=st.integers(1, 3))
def test_generator_answers_any_request_deliberately(
    channels: dict[str, grpc.Channel], generator_info: generator_pb2.GeneratorInfo, data: st.DataObject, tokens: int
) -> None:
    FIGURES["fuzz"]["grpc.generator"] += 1
    dim = generator_info.cross_attention_dim
    valid = {
        "prompt_embeds": embeddings(dim, tokens), "negative_prompt_embeds": embeddings(dim, tokens),
        "seed": st.integers(0, 2**64 - 1), "steps": values(1, 2), "width": values(64, 72), "height": values(64, 80),
        "scheduler": values("", *generator_info.schedulers), "guidance": st.none() | st.floats(0, 30),
    }
    invalid = {
        "prompt_embeds": bad_embeddings(dim, tokens), "negative_prompt_embeds": bad_embeddings(dim, tokens),
        "steps": values(-1, 151), "width": values(-8, 65, 2048), "height": values(-64, 4096),
        "scheduler": values("warp"), "guidance": values(-1.0, 31.0, *NOT_FINITE),
    }
    fields = data.draw(one_broken(valid, invalid))
    request = generator_pb2.GenerateRequest(**{k: v for k, v in fields.items() if v is not None})
    stub = generator_pb2_grpc.GeneratorStub(channels["generator"])
    answered(channels["generator"], lambda _: list(stub.Generate(request, timeout=60)))


LAYOUTS = values("options, file", "options, file", "options, file", "options twice", "file first", "options only",
                 "nothing")


@FUZZ
@given(options=image_options(), layout=LAYOUTS, data=RANDOM_FILES | mutations(SHORT_WAV) | st.just(SHORT_WAV))
def test_orchestrator_answers_any_job_deliberately(
    channels: dict[str, grpc.Channel], options: Any, layout: str, data: bytes
) -> None:
    FIGURES["fuzz"]["grpc.orchestrator"] += 1
    first = orchestrator_pb2.CreateImageRequest(options=options)
    file = orchestrator_pb2.CreateImageRequest(file_chunk=data)
    requests = {
        "options, file": [first, file], "options twice": [first, first, file], "file first": [file, first],
        "options only": [first], "nothing": [],
    }[layout]
    answered(channels["orchestrator"], job(*requests))
