"""Each service image installs only its own distribution, runs non-root, and lints clean.

Docker builds cannot run here (no engine), so the Dockerfiles are checked as
text: hadolint and checkov (dockerfile framework) must pass, and the facts the
manifests rely on are read back (uid, entry point, no weights baked in).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DISTS = {
    # image kind -> distribution folder (the build context is the repo root)
    "separator": "services/separator",
    "audio_encoder": "services/audio_encoder",
    "text_encoder": "services/text_encoder",
    "generator": "services/generator",
    "transcriber": "services/transcriber",
    "orchestrator": "orchestrator",
}
MODEL_KINDS = {"separator", "audio_encoder", "text_encoder", "generator", "transcriber"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(params=sorted(DISTS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def dockerfile(kind: str) -> Path:
    path = REPO / DISTS[kind] / "Dockerfile"
    assert path.is_file(), f"missing {path}"
    return path


def test_image_installs_only_core_and_its_own_distribution(kind: str, dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    installs = [args for op, args in steps if op == "RUN" and "pip install" in args]
    local = [tok for args in installs for tok in args.split() if tok.startswith("./")]
    assert sorted(local) == sorted(["./", f"./{DISTS[kind]}"])
    copied = [args.split()[0] for op, args in steps if op == "COPY" and "--from" not in args]
    for other_kind, folder in DISTS.items():
        if other_kind != kind:
            assert not any(c.startswith(folder) for c in copied), f"{kind} image copies {folder}"


def test_torch_comes_pinned_from_the_variant_index_and_only_for_model_images(kind: str, dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    args = {a.split("=")[0]: a.split("=", 1)[1] for op, a in steps if op == "ARG" and "=" in a}
    torch_runs = [a for op, a in steps if op == "RUN" and '"torch==' in a]
    if kind in MODEL_KINDS:
        assert args["TORCH_VARIANT"] == "cpu" and re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
        (run,) = torch_runs
        assert "${TORCH_VARIANT}" in run and '"torch==${TORCH_VERSION}"' in run
    else:
        assert not torch_runs and "TORCH_VARIANT" not in args


def test_runtime_stage_runs_as_the_uid_the_manifests_expect(kind: str, dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    froms = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    assert len(froms) == 2, "multi-stage: a build stage and a slim runtime stage"
    runtime = steps[froms[-1] :]
    (user,) = [a for op, a in runtime if op == "USER"]
    assert user == "10001:10001"
    (entry,) = [a for op, a in runtime if op == "ENTRYPOINT"]
    assert json.loads(entry) == ["audiomemory", "serve", kind]
    env = " ".join(a for op, a in runtime if op == "ENV")
    assert f"AUDIOMEMORY_{kind.upper()}_HOST=0.0.0.0" in env
    assert f"AUDIOMEMORY_{kind.upper()}_PORT=50051" in env
    # No weights baked in: nothing runs `models pull` at build time.
    assert not any("models pull" in a for op, a in steps if op == "RUN")


def test_model_images_preload_tcmalloc_from_a_pinned_package(kind: str, dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    runtime = steps[[i for i, (op, _) in enumerate(steps) if op == "FROM"][-1] :]
    env = " ".join(a for op, a in runtime if op == "ENV")
    installs = [a for op, a in runtime if op == "RUN" and "apt-get install" in a]
    if kind in MODEL_KINDS:
        # the soname alone: the loader finds it on any architecture's library path
        assert "LD_PRELOAD=libtcmalloc_minimal.so.4" in env
        (run,) = installs
        assert re.search(r"\blibtcmalloc-minimal4=\S+", run) and "rm -rf /var/lib/apt/lists/*" in run
    else:
        assert "LD_PRELOAD" not in env and not installs  # the orchestrator runs no model


def test_build_context_leaves_out_virtualenvs_and_other_services(kind: str, dockerfile: Path) -> None:
    text = (dockerfile.parent / "Dockerfile.dockerignore").read_text()
    ignore = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "deny everything first, then allow what the image needs"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "src", DISTS[kind]}


def test_hadolint_passes(hadolint: str, dockerfile: Path) -> None:
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_every_dockerfile(checkov: str, checkov_skips: dict[str, dict[str, str]]) -> None:
    skips = checkov_skips.get("dockerfile", {})
    cmd = [checkov, "--framework", "dockerfile", "-o", "json", "--skip-download"]
    for folder in DISTS.values():
        cmd += ["-f", str(REPO / folder / "Dockerfile")]
    if skips:
        cmd += ["--skip-check", ",".join(sorted(skips))]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report: dict[str, Any] = json.loads(result.stdout)
    failed = [f"{f['check_id']} {f['file_path']}" for f in report["results"]["failed_checks"]]
    assert not failed
    assert report["summary"]["passed"] >= 5 * 20


def test_deploy_run_as_user_matches_the_image_user() -> None:
    text = (REPO / "deploy" / "base" / "generator.yaml").read_text()
    deployment = next(d for d in yaml.safe_load_all(text) if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
