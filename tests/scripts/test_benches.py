"""Every ``make bench-*`` target's entry point in its smoke version (tiny models or sizes, one repeat): it runs to
its end and its last line is the JSON object with the keys the benchmark reports — so that none can rot
unnoticed (``make bench-e2e`` did: a ``KeyError: 'transcriber'`` once the transcriber service was added).
The real defaults stay the targets' own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from audiomemory.bench.common import song_wav
from audiomemory.runtime.allocator import find_tcmalloc
from audiomemory.stack import MODEL_KINDS

from .smoke import SCRIPTS, run_script


def test_bench_codec_reports_every_path() -> None:
    report = run_script("bench_codec", "--megabytes", "1", "--repeat", "1")
    paths = ("memcpy", "codec", "wire", "socket", "stream")
    assert set(report) == {f"{p}_gib_s" for p in paths} | {"codec_over_memcpy", "stream_over_socket"}
    assert all(report[f"{p}_gib_s"] > 0 for p in paths)


@pytest.mark.slow
@pytest.mark.long
def test_bench_audio_reports_demucs_openl3_and_memory() -> None:
    report = run_script("bench_audio", "--tiny", "--seconds", "1", "--repeat", "1", "--frames", "2",
                        "--batches", "2", "--memory", "1")
    assert report["bench"] == "audio" and report["openl3_frames"] == 2
    assert {"demucs_in_process_s", "demucs_service_native_s", "demucs_service_48k_mono_f16_s", "demucs_ratio_native",
            "demucs_ratio_48k_mono_f16", "openl3_fps_batch2", "openl3_fps_service_batch32",
            "openl3_rss_growth_gb_batch1_torchopenl3", "openl3_rss_growth_gb_batch1_lean"} <= set(report)
    # the openvino separator beside the eager one: the same stems (the 30-dB rule), its first and warm loads
    assert report["demucs_openvino_snr_db"] >= 30 and report["demucs_openvino_speedup"] > 0
    assert report["demucs_openvino_first_load_s"] > report["demucs_openvino_warm_load_s"] > 0


@pytest.mark.slow
def test_bench_vision_reports_unet_steps_and_clip_encode() -> None:
    report = run_script("bench_vision", "--tiny", "--sizes", "64", "--steps", "2", "--encode-repeat", "1")
    assert report["bench"] == "vision" and report["models"] == "tiny profile"
    (unet,) = report["unet"]
    assert unet["size"] == 64 and unet["png_bytes"] > 0
    assert {"in_process_s_per_step", "service_s_per_step", "ratio_service_over_in_process",
            "cpu_ratio_service_over_in_process"} <= set(unet)
    assert {"in_process_s", "service_s", "ratio_service_over_in_process"} <= set(report["clip_l_encode"])


@pytest.mark.long
def test_bench_generators_compares_the_backends_and_times_openvino_starts() -> None:
    report = run_script("bench_generators", "--tiny", "--size", "64", "--steps", "2", "--threads", "1")
    rows = report["backends"]
    assert "stable-diffusion float32" in rows and any(name.startswith("openvino ") for name in rows)
    assert rows["stable-diffusion float32"]["psnr_db_vs_eager_float32"] == float("inf")  # the reference itself
    assert all(row["step_s"] > 0 and row["psnr_db_vs_eager_float32"] > 0 for row in rows.values())
    # float32 through OpenVINO paints the eager image (the fidelity figure of another precision is the full-size
    # benchmark's to state: auto is bfloat16 on a CPU with native bf16, and the tiny model is not SD)
    assert all(row["psnr_db_vs_eager_float32"] >= 40 for name, row in rows.items() if name.endswith("float32"))
    first, warm = report["openvino_start"]["first_start"], report["openvino_start"]["warm_start"]
    assert first["convert_s"] > 0 and warm["convert_s"] == 0  # the second start read what the first converted
    assert first["peak_rss_mb"] > 0 and warm["load_s"] > 0


@pytest.mark.slow
@pytest.mark.long
def test_bench_e2e_compares_the_services_with_the_in_process_pipeline(bench_work: Path) -> None:
    """All five model services (the transcriber too) and the orchestrator, against ``InProcessPipeline``."""
    report = run_script("bench_e2e", "--tiny", "--seconds", "1", "--size", "64", "--steps", "1", "--repeat", "1",
                        "--hop", "10", "--no-warm-up", "--root", str(bench_work))
    assert report["bench"] == "e2e" and report["models"] == "tiny profile"
    assert {"grpc_over_inprocess", "grpc_over_inprocess_median", "grpc_over_inprocess_cpu", "cache_hit_over_cold",
            "grpc_total_s", "inprocess_total_s", "front_half_cold_s", "front_half_hit_s"} <= set(report)
    assert report["grpc_cold_stage_stamps_s"]["STAGE_DONE"] > 0
    assert set(report["inprocess_stage_s"]) == {"decode", "audio", "encode_text", "fuse", "generate"}


def test_bench_e2e_gives_the_full_size_models_a_transcriber(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The full-size models are four kinds; the stack starts five model services (what ``make bench-e2e`` crashed
    on): the transcriber gets the tiny profile's Whisper, every model service CPU and the threads asked for."""
    from audiomemory.bench import e2e

    monkeypatch.setattr(e2e, "write_models", lambda root, tiny=False: {k: {"model": k} for k in e2e.PIPELINE_KINDS})
    overrides = e2e.stack_overrides(e2e.parse(["--hop", "0.4", "--threads", "1"]), tmp_path, tmp_path / "cache")
    assert set(overrides) == {*MODEL_KINDS, "orchestrator"}
    assert Path(overrides["transcriber"]["model"]).is_dir()
    assert all(overrides[kind]["device"] == "cpu" and overrides[kind]["torch_threads"] == 1 for kind in MODEL_KINDS)
    assert overrides["audio_encoder"]["hop_seconds"] == 0.4
    assert overrides["orchestrator"] == {"cache_dir": str(tmp_path / "cache")}


@pytest.mark.slow
@pytest.mark.long
def test_bench_reel_compares_the_reel_with_the_image_and_batched_with_one_by_one(bench_work: Path) -> None:
    report = run_script("bench_reel", "--tiny", "--seconds", "4", "--sections", "2", "--min-section-seconds", "2",
                        "--size", "64", "--steps", "1", "--repeat", "1", "--hop", "2", "--no-warm-up", "--root",
                        str(bench_work))
    assert report["bench"] == "reel" and report["models"] == "tiny profile" and report["sections"] == 2
    assert {"image_total_s", "reel_total_s", "reel_sections_found_s", "reel_extra_over_image_s", "reel_over_image",
            "paint_batched_s", "paint_one_by_one_s", "one_by_one_over_batched", "one_by_one_over_batched_median",
            "generator_max_batch", "batch_size", "width", "steps", "song_seconds"} <= set(report)
    assert report["width"] == 64 and report["steps"] == 1 and report["song_seconds"] == 4
    assert all(v > 0 for v in (*report["reel_total_s"], *report["paint_batched_s"], *report["paint_one_by_one_s"]))


@pytest.mark.slow
@pytest.mark.long
def test_bench_scale_reports_the_two_replica_ratio() -> None:
    report = run_script("bench_scale", "--jobs", "2", "--rounds", "1", "--steps", "1", "--size", "64")
    assert set(report) == {"replicas2_over_1"} and report["replicas2_over_1"] > 0


@pytest.mark.slow
@pytest.mark.long
def test_bench_alloc_compares_glibc_with_tcmalloc() -> None:
    args = ["--tiny", "--size", "64", "--steps", "1", "--repeat", "1"]
    if find_tcmalloc() is None:  # `make test` installs it where the platform allows (`make system`)
        run = subprocess.run([sys.executable, str(SCRIPTS / "bench_alloc.py"), *args], capture_output=True,
                             text=True, timeout=60, check=False)
        assert run.returncode == 1 and "tcmalloc not found" in run.stderr
        return
    report = run_script("bench_alloc", *args)
    assert report["bench"] == "alloc" and report["models"] == "tiny UNet"
    assert {"tcmalloc_over_glibc_main", "tcmalloc_over_glibc_thread", "thread_over_main_glibc",
            "thread_over_main_tcmalloc"} <= set(report)
    assert set(report["minflt_per_call"]) == {"glibc", "tcmalloc"}


@pytest.mark.slow
@pytest.mark.long
def test_bench_song_runs_both_phases_and_the_fidelity_control(bench_work: Path, song_file: Path) -> None:
    control = bench_work / "control.wav"
    control.write_bytes(song_wav(1.5))
    report = run_script("bench_song", "--tiny", "--song", str(song_file), "--control", str(control),
                        "--song-seconds", "2", "--control-seconds", "1", "--work", str(bench_work))
    assert report["ok"] is True and report["song_seconds"] == 2.0
    assert {"new_s", "front_speedup", "speedup", "pooled_cos", "direction_cos", "direction_cos_between_songs",
            "direction_rule_met", "openl3_frames_per_s", "peak_rss_mb", "peak_rss_mb_reference"} <= set(report)
    # the new phase ran the CPU deployment's `backend: auto`, resolved by each service for this CPU
    assert set(report["backends"]) == {"audio_encoder", "generator", "separator", "text_encoder"}
    assert "auto" not in json.dumps(report["backends"])
    assert report["backends_reference"]["generator"] == "stable-diffusion float32"
    for label in ("first", "warm"):  # each compiled backend's start, on an empty cache then on what it left
        assert set(report["start_s"][label]) == {"audio_encoder", "generator", "separator"}
        assert all(seconds > 0 for seconds in report["start_s"][label].values())


def test_probe_concurrency_relays_every_piece_both_ways() -> None:
    """``make probe-concurrency``: the relay through threads and through grpc.aio, each piece answered."""
    report = run_script("probe_concurrency", "--megabytes", "4", "--jobs", "2", "--repeats", "1")
    assert report["jobs"] == 2
    for style in ("threads", "aio"):
        assert report[style]["wall_s"] > 0 and report[style]["mb_per_s"] > 0
    assert report["aio_over_threads_wall"] > 0


def test_bench_work_counts_what_a_whole_song_asks_of_each_stage() -> None:
    """The units bench-work multiplies are the services' own: bench-song's run of the whole 210-s song embedded
    3228 frames at the defaults and 8384 at the reference (its printed OpenL3 counts), with 20 and 30 PNDM steps."""
    from audiomemory.bench.song import REFERENCE
    from audiomemory.bench.work import units

    new, reference = units(210, {}), units(210, REFERENCE)
    assert (new["embed"], reference["embed"]) == (3228, 8384)
    assert (new["denoise"], reference["denoise"]) == (21, 31)  # PLMS: one warm-up call more than the steps
    assert new["separate"] == reference["separate"] == 36  # 7.8-s segments every 5.85 s
    # up to hop_growth_seconds the hop stays 0.1 s: 1-s windows from the start, the song padded by half a window
    assert units(30, {})["embed"] == 4 * (1 + 295)


@pytest.mark.long
def test_bench_work_counts_flops_and_times_the_rates() -> None:
    report = run_script("bench_work", "--tiny", "--size", "64", "--reference-seconds", "100")
    assert report["bench"] == "work" and report["models"] == "tiny"
    assert all(report["gflop_per_unit"][stage] > 0 for stage in ("separate", "embed", "denoise", "decode"))
    assert report["tflop_total"]["reference"] > report["tflop_total"]["new"] > 0  # the reference asks for more
    assert report["rates_gflops"]["gemm_f32"] > 0 and report["floor_s"]["reference"] > report["floor_s"]["new"] > 0
    assert report["needed_gflops"] == pytest.approx(report["tflop_total"]["new"] * 1e3 / (100 / 8), rel=0.01)
