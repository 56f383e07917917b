"""Hostile callers at the front door (issue 20, classes 2 and 3): a file whose decoded size its bytes do not
show, and callers who hold a job slot or room for audio by sending nothing."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from audiomemory.orchestrator.decode import decode_audio
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted
from audiomemory.runtime.service import RunningService
from audiomemory.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from .conftest import JobResult, StartOrchestrator, run_job
from .songs import encode_samples, encode_song


def _understated_flac(seconds: float, declared: float, rate: int = 8000) -> bytes:
    """A FLAC of ``seconds`` whose STREAMINFO says it holds ``declared`` seconds."""
    data = bytearray(encode_song("flac", rate, 1, seconds))
    assert data[:4] == b"fLaC"
    (head,) = struct.unpack(">Q", data[18:26])  # rate (20 bits), channels, bits, total samples (36 bits)
    total = int(declared * rate)
    data[18:26] = struct.pack(">Q", (head & ~((1 << 36) - 1)) | total)
    return bytes(data)


def test_a_song_above_48_khz_is_delivered_at_48_khz_as_it_is_decoded() -> None:
    decoded = decode_audio(encode_song("flac", 96000, 2, seconds=1.0))
    assert decoded.sample_rate == 48000 and decoded.source_rate == 96000
    assert abs(decoded.frames - 48000) < 64 and decoded.samples.nbytes < 48000 * 2 * 4 * 1.01


def test_a_rate_over_the_limit_is_refused_from_the_header_before_decoding() -> None:
    data = encode_samples("wav", np.zeros((1, 1000), np.float32), 500_000)
    with pytest.raises(InvalidInput, match="500000 Hz, over the limit max_sample_rate=384000 Hz"):
        decode_audio(data)


def test_a_header_that_understates_the_length_stops_decoding_where_the_reservation_ends() -> None:
    data = _understated_flac(seconds=12.0, declared=1.0)
    with pytest.raises(ResourceExhausted, match=r"more than the 3.1 s reserved for it \(its header declares 1.0 s"):
        decode_audio(data, max_seconds=60.0, grow=lambda frames: False)
    granted: list[int] = []
    decoded = decode_audio(data, max_seconds=60.0, grow=lambda frames: granted.append(frames) or True)
    assert abs(decoded.seconds - 12.0) < 0.1 and granted  # more room, when the budget has it


def _silent_requests(stop: threading.Event, head: list[orchestrator_pb2.CreateImageRequest]
                     ) -> Iterator[orchestrator_pb2.CreateImageRequest]:
    yield from head
    stop.wait(60)


def _attack(address: str, stop: threading.Event, head: list[orchestrator_pb2.CreateImageRequest],
            errors: list[grpc.RpcError]) -> None:
    with grpc.insecure_channel(address) as channel:
        try:
            for _ in orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(_silent_requests(stop, head),
                                                                                  timeout=60):
                pass
        except grpc.RpcError as exc:
            errors.append(exc)


def _creating(orch: RunningService) -> float:
    """CreateImage calls the orchestrator is in."""
    return orch.metrics.registry.get_sample_value(
        "audiomemory_in_flight", {"service": "orchestrator", "method": "CreateImage"}) or 0.0


def _victim_beside(orch: RunningService, attacks: list[list[orchestrator_pb2.CreateImageRequest]], seed: int
                   ) -> tuple[JobResult, float, list[grpc.RpcError]]:
    """The attackers (each sends its ``head`` and then nothing) hold on while a victim's 1-s job runs: the
    victim's result and seconds, and how the attackers' calls ended."""
    address = orch.address
    stop, errors = threading.Event(), []
    attackers = [threading.Thread(target=_attack, args=(address, stop, head, errors)) for head in attacks]
    before = _creating(orch)
    for attacker in attackers:
        attacker.start()
    waited = time.monotonic()
    while _creating(orch) < before + len(attacks) and time.monotonic() - waited < 10:
        time.sleep(0.02)
    assert _creating(orch) == before + len(attacks)  # every attacker's call is in, holding what it can
    started = time.monotonic()
    try:
        result = run_job(address, encode_song("wav", 16000, 1, seconds=1.0, seed=seed), seed=1, steps=1,
                         timeout=20)
    finally:
        stop.set()
        for attacker in attackers:
            attacker.join(30)
    return result, time.monotonic() - started, errors


def test_callers_that_never_send_their_options_hold_no_job_slot(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    orch = start_orchestrator(models, concurrency=1, max_queue=2)
    result, seconds, _ = _victim_beside(orch, [[], []], seed=51)
    assert result.png and seconds < 15
    assert not [e for e in result.events if e.stage == orchestrator_pb2.Stage.STAGE_QUEUED]


def _wav_header(rate: int, channels: int, seconds: float) -> bytes:
    """A 16-bit PCM WAV header declaring ``seconds`` of audio (none of which follows)."""
    size = int(rate * seconds) * channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate,
            rate * channels * 2, channels * 2, 16) + b"data" + struct.pack("<I", size))


def test_a_stalled_upload_is_ended_naming_the_setting_and_its_room_goes_to_the_next(
    start_orchestrator: StartOrchestrator, models: dict[str, RunningService]
) -> None:
    # 300 KB of a WAV promising 20 minutes at 48 kHz stereo (461 MB decoded: the budget has no room for a second
    # song beside it), then silence. No room is taken while a file is still coming, and the stalled upload is
    # ended within its window.
    orch = start_orchestrator(models, max_audio_bytes=470_000_000, request_window_seconds=1.0)
    upload = _wav_header(48000, 2, 1200) + bytes(300_000)
    head = [orchestrator_pb2.CreateImageRequest(options=orchestrator_pb2.CreateImageOptions(steps=1)),
            *(orchestrator_pb2.CreateImageRequest(file_chunk=upload[i : i + 100_000])
              for i in range(0, len(upload), 100_000))]
    result, seconds, errors = _victim_beside(orch, [head], seed=52)
    assert result.png and seconds < 15
    assert errors and errors[0].code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "min_request_rate=65536 bytes/s averaged over request_window_seconds=1" in errors[0].details()
