"""The product as a user runs it: the ``audiomemory`` CLI with the embedded default and tiny models.

One embedded run (all six services started in-process over real gRPC, then stopped), then
``reproduce`` from the PNG's metadata alone plus the song, and ``describe`` against ``up``-style
running services. A profile YAML selects the tiny models with a coarse encoder hop to stay quick.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from audiomemory.cli.main import cli
from audiomemory.stack import MODEL_KINDS, LocalStack


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def generated(profile: Path, song: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``audiomemory generate`` of the song with given lyrics (an embedded stack started and stopped): the image
    and what the command printed — reproduced from the same song, and from another, by the tests below."""
    folder = tmp_path_factory.mktemp("generated")
    lyrics = folder / "lyrics.txt"
    lyrics.write_text("[Chorus]\nla la la\nla la la\nthe night is young\n")
    out = folder / "memory.png"
    result = CliRunner().invoke(cli, ["generate", str(song), "--lyrics", str(lyrics), "-o", str(out), "--models",
                                      str(profile), "--steps", "2", "--size", "64x64", "--seed", "5", "--strength",
                                      "0.3", "--sidecar"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_generate_then_reproduce_gives_identical_pixels(
    profile: Path, song: Path, tmp_path: Path, generated: tuple[Path, str]
) -> None:
    out, output = generated
    assert "[separating]" in output and "[embedding]" in output
    assert "song: 100%" in output  # one bar through the whole song: separated and embedded
    image = Image.open(out)
    assert image.size == (64, 64)
    meta = json.loads(image.text["audiomemory"])  # type: ignore[attr-defined]
    assert meta["lyrics"]["text"] == "la la la, the night is young"
    assert meta["fusion"]["strength"] == pytest.approx(0.3)
    assert "Steps: 2" in image.text["parameters"]  # type: ignore[attr-defined]
    assert json.loads(out.with_suffix(".json").read_text())["song"]["sha256"] == meta["song"]["sha256"]

    again = tmp_path / "again.png"
    result = CliRunner().invoke(cli, ["reproduce", str(out), "--song", str(song), "--models", str(profile), "-o",
                                      str(again)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "pixels match: max difference 0/255" in result.output
    assert np.array_equal(_pixels(out), _pixels(again))


def test_reproduce_with_the_default_strength_is_exact_and_takes_no_profile_file_from_the_image(
    profile: Path, tmp_path: Path
) -> None:
    # A mono 22.05 kHz WAV, no --strength (the orchestrator's default, recorded as the float32 it was), no
    # --lyrics (transcribed): the recorded transcript is sent back as the lyrics, and the pixels are equal. The
    # image records its profile's path: reproduce without --models shows it and will not load it.
    import soundfile

    wav = tmp_path / "mono.wav"
    t = np.arange(int(22050 * 1.5)) / 22050
    soundfile.write(wav, (0.4 * np.sin(2 * np.pi * 330 * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32), 22050)
    out = tmp_path / "default.png"
    runner = CliRunner()
    made = runner.invoke(cli, ["generate", str(wav), "-o", str(out), "--models", str(profile), "--steps", "2",
                               "--size", "64x64", "--seed", "8"], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    meta = json.loads(Image.open(out).text["audiomemory"])  # type: ignore[attr-defined]
    assert meta["profile"] == str(profile) and meta["fusion"]["steered"]
    assert meta["fusion"]["strength"] == float(np.float32(0.1))
    assert meta["lyrics"]["source"] == "transcribed"  # no --lyrics: auto, and the embedded stack has a transcriber
    refused = runner.invoke(cli, ["reproduce", str(out), "--song", str(wav)], catch_exceptions=False)
    assert refused.exit_code == 1
    assert f"the image names the model profile {str(profile)!r}, which reproduce will not load" in refused.output
    result = runner.invoke(cli, ["reproduce", str(out), "--song", str(wav), "--models", str(profile)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    segments = len(meta["lyrics"]["transcript"]["segments"])
    assert f"re-using the transcript the image records ({segments} segment(s))" in result.output
    assert "pixels match: max difference 0/255" in result.output


def test_reproduce_reports_a_mismatch_when_the_song_differs(
    profile: Path, tmp_path: Path, generated: tuple[Path, str]
) -> None:
    out, _ = generated  # made from ``song``
    runner = CliRunner()
    other = tmp_path / "other.wav"
    import soundfile

    soundfile.write(other, np.random.default_rng(3).uniform(-0.5, 0.5, (44100, 2)), 44100)
    result = runner.invoke(cli, ["reproduce", str(out), "--song", str(other), "--models", str(profile)])
    assert result.exit_code == 1
    assert "not the song the image was made from" in result.output and "pixels differ" in result.output


def test_describe_prints_each_services_identity(profile: Path) -> None:
    overrides = yaml.safe_load(profile.read_text())
    with LocalStack(overrides) as stack:
        addresses = [stack.services[k].address for k in ("generator", "orchestrator")]
        result = CliRunner().invoke(cli, ["describe", *addresses], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    gen, orch = info[addresses[0]], info[addresses[1]]
    assert gen["service"] == "generator" and gen["model"]["backend"] == "stable-diffusion"
    assert gen["cross_attention_dim"] == orch["generator"]["cross_attention_dim"]
    assert orch["service"] == "orchestrator" and orch["separator"]["stems"]
    assert orch["transcriber"]["model"]["backend"] == "whisper" and orch["transcriber"]["sample_rate"] == 16000


@pytest.mark.long
def test_generate_without_lyrics_transcribes_and_a_reseed_reads_the_transcript_from_the_cache(
    profile: Path, song: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIOMEMORY_ORCHESTRATOR_CACHE_DIR", str(tmp_path / "cache"))  # an empty cache
    runner = CliRunner()
    args = ["--models", str(profile), "--steps", "2", "--size", "64x64", "--sidecar", "--print-lyrics"]
    first = runner.invoke(cli, ["generate", str(song), "-o", str(tmp_path / "a.png"), "--seed", "1", *args],
                          catch_exceptions=False)
    second = runner.invoke(cli, ["generate", str(song), "-o", str(tmp_path / "b.png"), "--seed", "2", *args],
                           catch_exceptions=False)

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    meta1 = json.loads((tmp_path / "a.json").read_text())
    meta2 = json.loads((tmp_path / "b.json").read_text())
    assert meta1["lyrics"]["source"] == "transcribed" and meta1["lyrics"]["transcript_cache_hit"] is False
    assert meta1["served"]["transcriber"]["model"]["backend"] == "whisper"
    assert "[transcribing] (transcribed)" in first.output
    segments = meta1["lyrics"]["transcript"]["segments"]
    assert f"# transcribed ({meta1['lyrics']['transcript']['language'] or '-'}), {len(segments)} segment(s)" \
        in first.output
    # The re-seed: the vector and the transcript from the cache, nothing separated, embedded or transcribed.
    assert meta2["cache_hit"] is True and meta2["lyrics"]["transcript_cache_hit"] is True
    assert meta2["lyrics"]["transcript"] == meta1["lyrics"]["transcript"]
    assert "[transcribing] (cache hit: transcribed before)" in second.output and "[separating]" not in second.output


def test_unknown_models_profile_is_a_clear_usage_error(song: Path) -> None:
    result = CliRunner().invoke(cli, ["generate", str(song), "--models", "huge"])
    assert result.exit_code != 0
    assert "expected default, tiny or an existing PROFILE.yaml, got 'huge'" in result.output


def test_default_models_offline_fail_fast_naming_the_model_and_the_ways_out(song: Path, tmp_path: Path,
                                                                           empty_caches: Path) -> None:
    import time

    start = time.monotonic()
    result = CliRunner().invoke(cli, ["generate", str(song), "--models", "default", "-o", str(tmp_path / "x.png")])
    assert time.monotonic() - start < 60
    assert result.exit_code == 1
    assert "htdemucs" in result.output
    assert "models pull" in result.output and "--models tiny" in result.output
    assert not (tmp_path / "x.png").exists()


def test_models_pull_without_network_says_one_line_per_model_and_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["models", "pull"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == len(MODEL_KINDS), result.output
    for kind, line in zip(MODEL_KINDS, lines, strict=True):
        assert line.startswith(f"{kind}: ") and "not fetched: offline mode is set" in line and "--models tiny" in line
    assert "Traceback" not in result.output


def test_a_secured_stack_refuses_plaintext_and_tokenless_callers_and_serves_a_token_holder(
    profile: Path, song: Path, tmp_path: Path
) -> None:
    # What `audiomemory up --tls-cert --tls-key --tls-ca --auth-tokens` runs: TLS everywhere, mTLS inside.
    import grpc
    from helpers import health

    from audiomemory.bench.certs import make_certs
    from audiomemory.cli.serve import secured
    from audiomemory.client import Client
    from audiomemory.v1 import common_pb2, orchestrator_pb2_grpc

    certs = make_certs(tmp_path / "certs")
    tokens = tmp_path / "tokens"
    token = "t0ken-for-ci-0123456789abcdef01234"  # 32+ characters
    tokens.write_text(f"{token} ci\n")
    overrides = secured(yaml.safe_load(profile.read_text()), certs.cert, certs.key, certs.ca, tokens)
    with LocalStack(overrides) as stack:
        with grpc.insecure_channel(stack.address) as plaintext, pytest.raises(grpc.RpcError) as refused:
            orchestrator_pb2_grpc.OrchestratorStub(plaintext).Describe(common_pb2.DescribeRequest(), timeout=10)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE  # no TLS handshake, no call
        with Client(stack.address, tls_ca=certs.ca) as anonymous:
            assert health(anonymous.channel, "audiomemory.v1.Orchestrator") == 1
            for attempt in (anonymous.describe, lambda: anonymous.generate(song, seed=1, steps=1)):
                with pytest.raises(grpc.RpcError) as denied:
                    attempt()
                assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
        runner = CliRunner()
        secure = ["--tls-ca", str(certs.ca), "--token", token]
        described = runner.invoke(cli, ["describe", stack.address, *secure], catch_exceptions=False)
        assert described.exit_code == 0, described.output
        assert json.loads(described.output)["service"] == "orchestrator"
        out = tmp_path / "secure.png"
        made = runner.invoke(cli, ["generate", str(song), "--orchestrator", stack.address, *secure, "-o", str(out),
                                   "--steps", "1", "--size", "64x64"], catch_exceptions=False)
        assert made.exit_code == 0, made.output
        assert Image.open(out).size == (64, 64)
