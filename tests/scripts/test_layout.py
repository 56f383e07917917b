"""scripts/ holds the Makefile's build helpers and one thin entry point per benchmark or reliability command:
every script is named by a Makefile recipe, and an entry point only calls ``main`` of its module in the
``audiomemory-bench`` distribution (no ``sys.path`` tricks, no code shared between scripts)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_HELPERS = {"check_sizes.py", "gen_protos.py"}


def recipes() -> str:
    return "\n".join(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("\t"))


def test_every_script_is_run_by_a_make_recipe() -> None:
    scripts = sorted(p.name for p in (ROOT / "scripts").iterdir() if p.suffix in {".py", ".sh"})
    assert [name for name in scripts if f"scripts/{name}" not in recipes()] == []


def test_every_entry_point_only_calls_main_of_its_bench_module() -> None:
    for path in sorted((ROOT / "scripts").glob("*.py")):
        if path.name in BUILD_HELPERS:
            continue
        body = ast.parse(path.read_text()).body
        imports = [node for node in body if isinstance(node, ast.Import | ast.ImportFrom)]
        assert len(imports) == 1, path.name
        (only,) = imports
        assert isinstance(only, ast.ImportFrom) and (only.module or "").startswith("audiomemory.bench."), path.name
        assert [alias.name for alias in only.names] == ["main"], path.name
        assert len(body) == 3, f"{path.name}: a docstring, the import and the __main__ guard only"
