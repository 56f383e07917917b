"""``make bench-gpu`` in its CPU mode (``--device cpu --tiny``): the script a CUDA machine runs, run here so that it
cannot rot; and its refusal when CUDA is asked for and absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiomemory.generator.backends.stable_diffusion import compute_dtype

from .smoke import run_script

KINDS = {"separator", "audio_encoder", "text_encoder", "generator"}


@pytest.mark.slow
def test_bench_gpu_on_the_cpu_times_every_stage_and_passes_its_checks(bench_work: Path) -> None:
    threads = torch.get_num_threads()
    try:  # one thread: two on the suite's two shared cores spend the tiny models' time waiting in OpenMP
        report = run_script("bench_gpu", "--device", "cpu", "--tiny", "--song-seconds", "2", "--threads", "1",
                            "--root", str(bench_work))
    finally:
        torch.set_num_threads(threads)
    assert report["bench"] == "gpu" and report["device"] == "cpu" and report["models"] == "tiny profile"
    assert report["torch"] == torch.__version__ and report["device_name"]
    assert report["ok"] is True and report["checks"] == {"devices": True, "sdpa": True, "nan_guard": True,
                                                         "batch": True}
    # (d) every backend where it was asked to be, the generator in what the precision policy picks here
    assert set(report["services"]) == KINDS
    assert all(s["device"] == "cpu" for s in report["services"].values())
    assert report["services"]["generator"]["dtype"] == str(compute_dtype("auto", "cpu")).removeprefix("torch.")
    assert report["attention_processors"] == {"unet": ["AttnProcessor2_0"], "vae": ["AttnProcessor2_0"]}
    assert report["compile"] is False and report["channels_last"] is False and report["warm_up"] is False
    # (a) the stages end in the job's order, within the job
    ends = report["stage_end_s"]
    order = [ends[k] for k in ("decode", "separation", "embedding", "text", "fusion", "generation")]
    assert order == sorted(order) and 0 < order[-1] <= report["total_min_s"]
    assert report["stage_s"]["generation"] > 0 and report["stage_s"]["front_half"] == ends["embedding"]
    assert report["text_encode_alone_s"] > 0
    # (b) the VAE decodes in float32 and refuses non-finite latents
    vae = report["vae"]
    assert vae["vae_dtype"] == vae["vae_weights_dtype"] == "float32" and vae["random_latents_decode"] is True
    assert vae["cases"] == {"+inf": "raised", "-inf": "raised", "one NaN": "raised"}
    # (c) on a CPU in eager mode each batch item is bit for bit its image painted alone
    batch = report["batch"]
    assert batch["rule"] == "bit for bit" and batch["size"] == 4
    assert batch["identical"] is True and batch["max_abs_diff"] == [0, 0, 0, 0] and batch["psnr_db"] == [None] * 4
    assert batch["batched_s"][0] > 0 and batch["one_by_one_s"][0] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_gpu_says_cuda_is_absent_when_asked_for_it() -> None:
    from audiomemory.bench.gpu import main

    with pytest.raises(SystemExit, match=r"--device cuda, but this torch .* sees no CUDA device"):
        main(["--device", "cuda"])


def test_bench_gpu_tunes_for_cuda_by_default_and_not_for_the_cpu() -> None:
    """CUDA: a warm-up job, channels_last, torch.compile, and the 4-minute song at 512² and 20 steps; the CPU mode
    none of the three; ``--tiny`` small sizes; an explicit option wins."""
    from audiomemory.bench.gpu import parse

    cuda = parse([])
    assert (cuda.device, cuda.compile, cuda.channels_last, cuda.warm_up) == ("cuda", True, True, True)
    assert (cuda.song_seconds, cuda.size, cuda.steps, cuda.repeat) == (240.0, 512, 20, 3)
    cpu = parse(["--device", "cpu", "--tiny"])
    assert (cpu.compile, cpu.channels_last, cpu.warm_up) == (False, False, False)
    assert (cpu.song_seconds, cpu.size, cpu.steps, cpu.repeat) == (4.0, 64, 2, 1)
    mixed = parse(["--no-compile", "--size", "256", "--device", "cpu", "--channels-last"])
    assert (mixed.compile, mixed.channels_last, mixed.size, mixed.steps) == (False, True, 256, 20)
