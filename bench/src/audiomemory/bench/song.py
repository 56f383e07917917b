"""Benchmark a whole song through the services, new defaults against the reference, with fidelity.

Full-size random-weight models (htdemucs, OpenL3 music/mel256/512, CLIP ViT-L/14's text tower, SD 1.5
UNet + VAE; written by ``audiomemory.bench.models.write_models``, loaded by the services' normal loaders), each
service in a process of its own (``audiomemory serve KIND``, as deployed), loopback gRPC. The song is a real
recording: ``machine_wars.mp3`` from Debian's ``asc-music`` package (Michael Kievernagel, GPL-2+; 22.05
kHz stereo MP3, 4 min 51 s), fetched with ``apt-get download`` into the work folder (``--song`` takes
any file instead), cut to ``--song-seconds`` (default 210 s = 3.5 minutes); the between-songs control
is ``time_to_strike.mp3`` from the same package.

In one run:

1. **new** (the CPU deployment: the services' defaults with ``backend: auto`` for the three models that have
   a compiled backend, as ``deploy/overlays/cpu`` runs them — ``CPU_DEPLOYMENT``): the whole song at the
   defaults (512², the generator's default steps) → ``ok`` (a PNG with its metadata came back) and ``new_s``,
   per-stage wall times, OpenL3 frames/s, each service's peak RSS (VmHWM of its process), the backend each
   service ran (its Describe);
2. **reference** (fp32 everywhere, hop 0.1 s, 30 PNDM steps: the settings before the whole-song work)
   on the same input — the whole song, or with ``--compare-seconds N`` the same first N seconds for
   both paths, with the new path run again on that excerpt (said in the JSON as
   ``compared_on_seconds``); from the comparison ``front_speedup`` (upload to text encoding: decode,
   separate, embed, pool; reference ÷ new) and ``speedup`` (the whole job);
3. **fidelity** (docs/DESIGN.md §9) on the compared input: the pooled vector's cosine new vs reference,
   the fused direction û's cosine, and the control: û of the reference on another song (its first
   ``--control-seconds``, default 30; generation at 64² and one step, which does not change û);
4. **starts** (unless ``--skip-starts``): each service with a compiled backend, at the new settings, started
   alone in a process of its own, spawn to SERVING — *first* on an empty compiled-model cache (conversion and
   compilation included), then *warm* on what the first left.

Prints the parameters, a table, and last one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from audiomemory.bench.common import LYRICS, cpu_model, progress
from audiomemory.bench.models import write_models
from audiomemory.bench.processes import InProcessServices, Services
from audiomemory.client import Client, ImageResult
from audiomemory.orchestrator.cache import AudioCache, CachedAudio
from audiomemory.orchestrator.decode import decode_audio
from audiomemory.orchestrator.fusion import Projection, audio_direction
from audiomemory.runtime.allocator import heap_allocator
from audiomemory.stack import KINDS, MODEL_KINDS, definition
from audiomemory.v1 import orchestrator_pb2

Stage = orchestrator_pb2.Stage
PACKAGE = "asc-music"
SONG, CONTROL = "machine_wars.mp3", "time_to_strike.mp3"
#: The settings before the whole-song work: float32 everywhere, OpenL3 every 0.1 s whatever the length,
#: 30 steps of the model's own scheduler (SD 1.5: PNDM).
REFERENCE: dict[str, dict[str, Any]] = {
    "audio_encoder": {"hop_seconds": 0.1, "hop_growth_seconds": 0, "precision": "float32"},
    "separator": {"precision": "float32"},
    "generator": {"backend": "stable-diffusion", "precision": "float32", "default_steps": 30,
                  "default_scheduler": "pndm"},  # eager diffusers, whatever backend a deployment runs
}
#: The CPU deployment's backends (``deploy/overlays/cpu``'s model profile; a test keeps the two equal): on top of
#: the services' defaults, what the "new" phase runs. ``auto`` picks by this CPU's flags (runtime/precision.py).
CPU_DEPLOYMENT: dict[str, dict[str, Any]] = {kind: {"backend": "auto"}
                                             for kind in ("audio_encoder", "generator", "separator")}
#: ``--tiny``: the services in this process, one OpenL3 window a second, one denoising step.
QUICK_ENCODER = {"hop_seconds": 1.0, "hop_growth_seconds": 0}


def fetch_songs(work: Path) -> tuple[Path, Path]:
    """The two recordings from Debian's package (downloaded once into ``work``)."""
    folder = work / PACKAGE
    song, control = folder / SONG, folder / CONTROL
    if not song.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", PACKAGE], cwd=folder, check=True, capture_output=True)
        (deb,) = folder.glob(f"{PACKAGE}_*.deb")
        subprocess.run(["dpkg", "-x", str(deb), str(folder / "x")], check=True)
        for name in (SONG, CONTROL):
            shutil.copy(next((folder / "x").rglob(name)), folder / name)
    return song, control


def cut(path: Path, seconds: float, out: Path) -> Path:
    """The first ``seconds`` of a recording as a 16-bit WAV at its own rate (what a user might upload)."""
    song = decode_audio(path.read_bytes(), filename=path.name, max_seconds=3600)
    frames = min(song.frames, int(seconds * song.sample_rate))
    sf.write(out, song.samples[:, :frames].T, song.sample_rate, subtype="PCM_16")
    return out


def run(address: str, song: Path, **options: Any) -> dict[str, Any]:
    """One job; wall times of its stages (from its events), its frames and its PNG."""
    start = time.perf_counter()
    marks: dict[str, float] = {}
    frames = 0
    front_times: list[float] = []  # events from the first separation event to the last embedding event
    result: ImageResult | None = None
    with Client(address) as client:
        for event in client.create_image(song, lyrics=LYRICS, **options):
            now = time.perf_counter() - start
            if isinstance(event, ImageResult):
                result = event
                break
            name = orchestrator_pb2.Stage.Name(event.stage).removeprefix("STAGE_").lower()
            marks.setdefault(f"{name}_first", now)
            marks[f"{name}_last"] = now
            if "separating_first" in marks and "encoding_text_first" not in marks:
                front_times.append(now)
            if event.stage == Stage.STAGE_EMBEDDING:
                frames = max(frames, event.total)
            if event.stage == Stage.STAGE_SEPARATING and event.total and event.current >= event.total:
                marks.setdefault("separated", now)
    total = time.perf_counter() - start
    ok = result is not None and result.png.startswith(b"\x89PNG") and bool(result.metadata)
    # separation and embedding run together: frames over the time from the first separated block to the last frame
    embed_s = marks.get("embedding_last", 0) - marks.get("separating_first", 0)
    return {
        "ok": ok, "total_s": round(total, 2), "front_s": round(marks["encoding_text_first"], 2),
        "separated_at_s": round(marks.get("separated", marks.get("separating_last", 0)), 2),
        "embedded_at_s": round(marks.get("embedding_last", 0), 2),
        "generate_s": round(marks.get("done_first", total) - marks.get("generating_first", 0), 2),
        "max_event_gap_s": round(max(np.diff(front_times), default=0.0), 2),
        "openl3_frames": frames, "openl3_frames_per_s": round(frames / embed_s, 2) if embed_s > 0 else None,
        "backends": backends(result.metadata if result else {}), "metadata": result.metadata if result else {},
    }


def backends(record: dict[str, Any]) -> dict[str, str]:
    """"backend dtype" of each model service that served the job, from the image's record (its replicas'
    call headers; a cache hit has no separator or audio encoder)."""
    return {kind: f"{served['model']['backend']} {served['model']['dtype']}"
            for kind, served in sorted(record.get("served", {}).items()) if kind != "orchestrator"}


def pooled(cache_dir: Path, sha256: str) -> np.ndarray:
    """The pooled vector a phase computed for the song with ``sha256`` (from its orchestrator's cache)."""
    cache = AudioCache(cache_dir)
    for entry in sorted(cache.root.glob("*/*.amc"), key=lambda p: p.stat().st_mtime):
        value = cache.get(entry.stem)
        if isinstance(value, CachedAudio) and _sha_of(value.pooled) == sha256:
            return np.asarray(value.pooled, np.float64)
    raise RuntimeError(f"no cached audio vector with sha256 {sha256[:12]} in {cache_dir}")


def _sha_of(vector: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(vector, np.float32).tobytes()).hexdigest()


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def direction(a: np.ndarray) -> np.ndarray:
    u = audio_direction(a, Projection.from_seed(768, 0, a.size))
    assert u is not None
    return u


def phase(name: str, settings: dict[str, dict[str, Any]], work: Path, jobs: list[tuple[str, Path, dict[str, Any]]],
          *, fresh: bool = True, quick: bool = False) -> tuple[dict[str, dict[str, Any]], dict[str, float], Path]:
    """Start the services with ``settings``, run ``jobs``; ``fresh``: with an empty audio cache (a vector
    cached by an earlier run of the same song would make its front half a cache hit). ``quick`` (``--tiny``):
    the services in this process, and the jobs take one step at hop 1 s."""
    cache = work / f"cache-{name}"
    if fresh:
        shutil.rmtree(cache, ignore_errors=True)
    progress(f"{name}: starting the five services")
    if quick:
        settings = {**settings, "audio_encoder": {**settings.get("audio_encoder", {}), **QUICK_ENCODER}}
        jobs = [(label, song, {**options, "steps": 1}) for label, song, options in jobs]
    services = (InProcessServices if quick else Services)(settings, cache).start()
    results: dict[str, dict[str, Any]] = {}
    try:
        for label, song, options in jobs:
            progress(f"{name}: job {label} ({song.name})")
            results[label] = run(services.addresses["orchestrator"], song, **options)
            progress(f"{name}: job {label}: {json.dumps({k: v for k, v in results[label].items() if k != 'metadata'})}")
        peaks = services.peak_rss_mb()
    finally:
        services.stop()
    return results, peaks, cache


def inputs(args: argparse.Namespace, song_file: Path, control_file: Path | None) -> tuple[Path, Path, Path]:
    """The song cut to ``--song-seconds``, the compared input (the song, or its first ``--compare-seconds``),
    the control (the other song's first ``--control-seconds``, at most as long as the compared input)."""
    song = cut(song_file, args.song_seconds, args.work / "song.wav")
    compare = song if not args.compare_seconds else cut(song_file, args.compare_seconds, args.work / "excerpt.wav")
    compared = decode_audio(compare.read_bytes()).seconds
    control = cut(control_file or song_file, min(compared, args.control_seconds), args.work / "control.wav")
    return song, compare, control


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--song", type=Path, help="a song file (default: Debian asc-music's machine_wars.mp3)")
    parser.add_argument("--control", type=Path, help="another song for the between-songs control")
    parser.add_argument("--song-seconds", type=float, default=210.0)
    parser.add_argument("--compare-seconds", type=float, default=0.0,
                        help="compare new vs reference on this first stretch (0 = the whole song)")
    parser.add_argument("--control-seconds", type=float, default=30.0,
                        help="length of the other song's excerpt for the between-songs control")
    parser.add_argument("--root", type=Path, help="where the full-size random models are (written if absent)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "audiomemory-bench-song")
    parser.add_argument("--tiny", action="store_true",
                        help="the tiny profile in this process, one step, hop 1 s (a quick check of this script)")
    parser.add_argument("--candidates", action="store_true",
                        help="fidelity and front half only (64², one step) of the reference and of candidate "
                        "settings against the new defaults: which modes keep the fidelity rule")
    parser.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), help="with --candidates: just these")
    parser.add_argument("--reuse-reference", action="store_true",
                        help="with --candidates: the reference's vectors from an earlier run's cache (its front "
                        "half is then a cache hit: no front_speedup is printed)")
    parser.add_argument("--skip-starts", action="store_true", help="no first-start / warm-start timing")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    models = write_models(args.work if args.tiny else args.root or args.work / "models", tiny=args.tiny)
    song_file, control_file = (args.song, args.control) if args.song else fetch_songs(args.work)
    song, compare, control = inputs(args, song_file, control_file)
    song_seconds = round(decode_audio(song.read_bytes()).seconds, 2)
    compared = song_seconds if compare is song else round(decode_audio(compare.read_bytes()).seconds, 2)
    default_steps = definition("generator").config_class.model_fields["default_steps"].default
    print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "allocator": heap_allocator(),
                      "song": song_file.name, "song_seconds": song_seconds, "compared_on_seconds": compared,
                      "size": "512x512 (default)", "steps": f"{default_steps} (default)",
                      "reference_steps": REFERENCE["generator"]["default_steps"]}), flush=True)

    control_job = {"steps": 1, "width": 64, "height": 64, "seed": 1}
    if args.candidates:
        return candidates(models, args.work, compare, control, control_job, compared, args.tiny, args.only,
                          reuse=args.reuse_reference)
    new_jobs = [("whole", song, {"seed": 1})]
    if compare is not song:
        new_jobs.append(("compare", compare, {"seed": 1}))
    new_settings = {k: {**models.get(k, {}), **CPU_DEPLOYMENT.get(k, {})} for k in KINDS}
    new, new_peaks, new_cache = phase("new", new_settings, args.work, new_jobs, quick=args.tiny)
    reference_settings = {k: {**models.get(k, {}), **REFERENCE.get(k, {})} for k in KINDS}
    ref, ref_peaks, ref_cache = phase("reference", reference_settings, args.work,
                                      [("compare", compare, {"seed": 1}), ("control", control, control_job)],
                                      quick=args.tiny)
    started = {} if args.skip_starts else starts(new_settings, args.work)
    report(new, ref, new["compare" if compare is not song else "whole"], (new_cache, ref_cache),
           {"new": new_peaks, "reference": ref_peaks}, {"song_seconds": song_seconds, "compared_on_seconds": compared},
           started)


def starts(settings: dict[str, dict[str, Any]], work: Path) -> dict[str, dict[str, float]]:
    """Seconds from spawning to SERVING of each service with a compiled backend (a ``compiled_cache``
    setting), one at a time: ``first`` on an empty compiled-model cache, ``warm`` on what the first left."""
    kinds = [kind for kind in MODEL_KINDS if "compiled_cache" in definition(kind).config_class.model_fields]
    folder = work / "compiled-starts"
    shutil.rmtree(folder, ignore_errors=True)
    settings = {kind: {**settings.get(kind, {}), "compiled_cache": str(folder)} for kind in kinds}
    times = {}
    for label in ("first", "warm"):
        progress(f"starts: {label}: {', '.join(kinds)} one at a time")
        services = Services(settings, work / "cache-starts")
        try:
            times[label] = services.time_starts(kinds)
        finally:
            services.stop()
    shutil.rmtree(folder, ignore_errors=True)
    return times


def report(new: dict[str, dict[str, Any]], ref: dict[str, dict[str, Any]], new_cmp: dict[str, Any],
           caches: tuple[Path, Path], peaks: dict[str, dict[str, float]], lengths: dict[str, float],
           started: dict[str, dict[str, float]]) -> None:
    """The table, the fidelity line and the JSON line of one run (the new phase's and the reference's jobs)."""
    new_cache, ref_cache = caches
    new_peaks, ref_peaks = peaks["new"], peaks["reference"]
    a_new = pooled(new_cache, new_cmp["metadata"]["fusion"]["audio_vector_sha256"])
    a_ref = pooled(ref_cache, ref["compare"]["metadata"]["fusion"]["audio_vector_sha256"])
    a_other = pooled(ref_cache, ref["control"]["metadata"]["fusion"]["audio_vector_sha256"])
    u_new, u_ref, u_other = direction(a_new), direction(a_ref), direction(a_other)
    direction_cos, between = cos(u_new, u_ref), cos(u_ref, u_other)
    rows = [("whole song, new (s)", new["whole"]["total_s"]), ("front half new (s)", new_cmp["front_s"]),
            ("front half reference (s)", ref["compare"]["front_s"]),
            ("separated at, new / ref (s)", f"{new_cmp['separated_at_s']} / {ref['compare']['separated_at_s']}"),
            ("embedded at, new / ref (s)", f"{new_cmp['embedded_at_s']} / {ref['compare']['embedded_at_s']}"),
            ("generate new / ref (s)", f"{new_cmp['generate_s']} / {ref['compare']['generate_s']}"),
            ("whole job new / ref (s)", f"{new_cmp['total_s']} / {ref['compare']['total_s']}"),
            ("longest wait for progress, separating and embedding (s)", new["whole"]["max_event_gap_s"]),
            ("OpenL3 frames/s new / ref",
             f"{new_cmp['openl3_frames_per_s']} / {ref['compare']['openl3_frames_per_s']}"),
            ("peak RSS new (MB)", new_peaks), ("peak RSS reference (MB)", ref_peaks),
            ("backends new", new["whole"]["backends"]),
            ("first start, empty compiled cache (s)", started.get("first", "-")),
            ("warm start (s)", started.get("warm", "-"))]
    for label, value in rows:
        print(f"{label:34} {value}")
    rule = (1 - direction_cos) <= 0.1 * (1 - between)
    print(f"fidelity: pooled cos {cos(a_new, a_ref):.6f} (>= 0.999), direction cos {direction_cos:.6f} (>= 0.99), "
          f"between songs {between:.6f}: 1-cos {1 - direction_cos:.2e} <= 0.1 x {1 - between:.2e}: {rule}")
    print(json.dumps({
        "song_seconds": lengths["song_seconds"], "ok": new["whole"]["ok"], "new_s": new["whole"]["total_s"],
        "compared_on_seconds": lengths["compared_on_seconds"],
        "front_speedup": round(ref["compare"]["front_s"] / new_cmp["front_s"], 3),
        "speedup": round(ref["compare"]["total_s"] / new_cmp["total_s"], 3),
        "pooled_cos": round(cos(a_new, a_ref), 6), "direction_cos": round(direction_cos, 6),
        "direction_cos_between_songs": round(between, 6), "direction_rule_met": rule,
        "openl3_frames_per_s": new_cmp["openl3_frames_per_s"], "max_event_gap_s": new["whole"]["max_event_gap_s"],
        "openl3_frames_per_s_reference": ref["compare"]["openl3_frames_per_s"],
        "peak_rss_mb": new_peaks, "peak_rss_mb_reference": ref_peaks, "allocator": heap_allocator(),
        "backends": new["whole"]["backends"], "backends_reference": ref["compare"]["backends"],
        "start_s": started,
    }), flush=True)


#: Settings tried against the fidelity rule by ``--candidates`` (on top of the services' defaults).
CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "defaults": {},
    "cpu_deployment": CPU_DEPLOYMENT,  # backend auto: by this CPU's flags
    "bf16_fixed_hop_0.2": {"audio_encoder": {"precision": "bfloat16", "hop_seconds": 0.2, "hop_growth_seconds": 0}},
    "int8_fixed_hop_0.2": {"audio_encoder": {"precision": "int8", "hop_seconds": 0.2, "hop_growth_seconds": 0}},
    "bf16_grown_hop": {"audio_encoder": {"precision": "bfloat16"}},
    "int8_grown_hop": {"audio_encoder": {"precision": "int8"}},  # int8 where the CPU has no VNNI: reduced range
    "openvino_separator": {"separator": {"backend": "openvino"}},  # HTDemucs' network through OpenVINO
    "openvino_encoder": {"audio_encoder": {"backend": "openvino"}},  # OpenL3's CNN through OpenVINO
    "openvino_both": {"separator": {"backend": "openvino"}, "audio_encoder": {"backend": "openvino"}},
}


def candidates(models: dict[str, dict[str, Any]], work: Path, compare: Path, control: Path,
               job: dict[str, Any], compared: float, quick: bool = False, only: list[str] | None = None,
               reuse: bool = False) -> None:
    """The reference's û on the compared input and the control, then each candidate's: the rule per candidate.
    ``reuse``: the reference's vectors from an earlier run's cache (no front half to compare with then). Every
    phase paints with the eager generator (64², one step: the candidates are front-half settings)."""
    reference_settings = {k: {**models.get(k, {}), **REFERENCE.get(k, {})} for k in KINDS}
    ref, _, ref_cache = phase("reference", reference_settings, work, [("compare", compare, job),
                                                                      ("control", control, job)],
                              fresh=not reuse, quick=quick)
    a_ref = pooled(ref_cache, ref["compare"]["metadata"]["fusion"]["audio_vector_sha256"])
    a_other = pooled(ref_cache, ref["control"]["metadata"]["fusion"]["audio_vector_sha256"])
    u_ref = direction(a_ref)
    allowed = 0.1 * (1 - cos(u_ref, direction(a_other)))
    for name, changes in CANDIDATES.items():
        if only and name not in only:
            continue
        settings = {k: {**models.get(k, {}), **changes.get(k, {})} for k in KINDS}
        settings["generator"] = {**settings["generator"], "backend": "stable-diffusion"}
        new, _, cache = phase(name, settings, work, [("compare", compare, job)], quick=quick)
        a_new = pooled(cache, new["compare"]["metadata"]["fusion"]["audio_vector_sha256"])
        error = 1 - cos(direction(a_new), u_ref)
        front, front_ref = new["compare"]["front_s"], None if reuse else ref["compare"]["front_s"]
        print(json.dumps({"candidate": name, "compared_on_seconds": compared, "pooled_cos": round(cos(a_new, a_ref), 6),
                          "direction_error": float(f"{error:.3g}"), "allowed": float(f"{allowed:.3g}"),
                          "rule_met": bool(cos(a_new, a_ref) >= 0.999 and error <= allowed),
                          "backends": new["compare"]["backends"], "front_s": front, "front_s_reference": front_ref,
                          "front_speedup": None if front_ref is None else round(front_ref / front, 3)}),
              flush=True)


if __name__ == "__main__":
    main()
