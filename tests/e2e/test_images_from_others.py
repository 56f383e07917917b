"""Images (and orchestrators) from someone else: ``reproduce`` and ``generate``'s summary read any bytes with one
line naming the file, and nothing an image records chooses a model profile, a path or code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from click.testing import CliRunner, Result

from audiomemory import profiles
from audiomemory.bench.hostile_png import GOOD, hostile, png
from audiomemory.cli.main import cli
from audiomemory.cli.reproduce import recorded_models
from audiomemory.v1 import orchestrator_pb2, orchestrator_pb2_grpc, record_pb2

HOSTILE = hostile()


def _one_line_refusal(result: Result, name: str) -> str:
    """The run ended by a one-line error naming ``name`` (a ClickException's exit), never by a traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a crash
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_reproduce_says_one_line_naming_the_file_for_any_bytes(case: str, tmp_path: Path) -> None:
    image = tmp_path / f"{case}.png"
    image.write_bytes(HOSTILE[case])
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    result = CliRunner().invoke(cli, ["reproduce", str(image), "--song", str(song), "--orchestrator", "127.0.0.1:9"])
    line = _one_line_refusal(result, str(image))
    assert len(line) < 400


def test_reproduce_never_loads_a_profile_an_image_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A shared bundle: the image, and beside it a profile that points the separator at a Demucs repo whose
    # pickle would run. Reproduced as its README would say (no --models), the profile is never read.
    repo = tmp_path / "demucs-repo"
    repo.mkdir()
    (repo / "payload.th").write_bytes(b"a pickle that would run code")
    (tmp_path / "bundle.yaml").write_text(yaml.safe_dump({"separator": {"model": "payload", "repo": str(repo)}}))
    image = tmp_path / "shared.png"
    image.write_bytes(png({**GOOD, "profile": "bundle.yaml"}))
    song = tmp_path / "song.wav"
    song.write_bytes(b"RIFF")
    monkeypatch.chdir(tmp_path)
    read: list[Path] = []

    def no_profile_read(path: Path) -> Any:
        read.append(path)
        raise AssertionError(f"reproduce read the profile {path} the image named")

    monkeypatch.setattr(profiles, "_read", no_profile_read)
    result = CliRunner().invoke(cli, ["reproduce", str(image), "--song", str(song)])
    line = _one_line_refusal(result, "bundle.yaml")
    assert "will not load" in line and "--models" in line
    assert read == []


def test_reproduce_takes_only_a_built_in_profile_name_from_an_image() -> None:
    def profile(name: str) -> record_pb2.ImageRecord:
        return record_pb2.ImageRecord(profile=name)

    assert recorded_models(profile("tiny"), None) == "tiny"
    assert recorded_models(profile("default"), None) == "default"
    assert recorded_models(profile(""), None) == "auto"  # a deployment records none
    assert recorded_models(profile("/somewhere/else.yaml"), "tiny") == "tiny"  # what the user passes wins
    for named in ("/somewhere/else.yaml", "tiny.yaml", "../tiny", "auto\nwith a second line"):
        with pytest.raises(Exception, match="will not load") as refused:
            recorded_models(profile(named), None)
        assert "\n" not in str(refused.value)


class _Forger(orchestrator_pb2_grpc.OrchestratorServicer):
    """An orchestrator that answers every job with a real PNG and the record ``metadata_json``."""

    def __init__(self, metadata_json: str) -> None:
        self.metadata_json = metadata_json

    def CreateImage(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        for _ in request_iterator:
            pass
        yield orchestrator_pb2.CreateImageResponse(result=orchestrator_pb2.ImageResult(
            png=png(), last=True, metadata_json=self.metadata_json))


@pytest.mark.parametrize("record", [
    "[" * 100_000 + "]" * 100_000,
    json.dumps({**GOOD, "lyrics": []}),
    json.dumps({**GOOD, "lyrics": {"source": "transcribed", "transcript": {"segments": 5}}}),
    "not json",
], ids=["nested-deep", "lyrics-is-a-list", "segments-is-5", "not-json"])
def test_generates_summary_of_a_forged_record_is_one_line(record: str, tmp_path: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.max_send_message_length", 8 << 20)])
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(_Forger(record), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        song = tmp_path / "song.wav"
        song.write_bytes(b"RIFF")
        result = CliRunner().invoke(cli, ["generate", str(song), "--lyrics", "none", "--print-lyrics", "-o",
                                          str(tmp_path / "out.png"), "--orchestrator", f"127.0.0.1:{port}"])
    finally:
        server.stop(0)
    _one_line_refusal(result, "the orchestrator's record")
