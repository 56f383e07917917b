"""Size limits for the project's code: no function over 60 lines, no module over 400 lines.

    python scripts/check_sizes.py                      # the repository this script lives in
    python scripts/check_sizes.py --root DIR --allowlist FILE

Scans every ``.py`` file under ``src/``, ``services/``, ``orchestrator/`` and ``bench/`` (generated code,
``src/audiomemory/v1``, is left out). A function's length runs from its ``def`` line to its last
line, docstring and comments included, decorators not; methods and nested functions count on their
own, by qualified name (``Class.method``, ``outer.inner``). Prints one line per violation and exits 1
when there is any:

    path:line: function NAME is N lines (limit 60)
    path:1: file is N lines (limit 400)

Exceptions are named, with a reason each, in ``scripts/size_allowlist.toml``::

    [functions]
    "src/audiomemory/x.py:Class.method" = "why it stays long"

    [files]
    "src/audiomemory/y.py" = "why it stays long"

An entry that no longer matches a violation is reported too, so the list only shrinks.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FUNCTION_LIMIT = 60
FILE_LIMIT = 400
ROOTS = ("src", "services", "orchestrator", "bench")
EXCLUDED = ("src/audiomemory/v1",)
SKIP_DIRS = {"__pycache__", "build", "dist", ".venv", ".git"}
DEFAULT_ALLOWLIST = Path("scripts") / "size_allowlist.toml"


@dataclass(frozen=True)
class Violation:
    path: str  # relative to the root, with forward slashes
    line: int
    name: str  # the function's qualified name; "" for the whole file
    lines: int

    @property
    def key(self) -> str:
        return f"{self.path}:{self.name}" if self.name else self.path

    def __str__(self) -> str:
        if self.name:
            return f"{self.path}:{self.line}: function {self.name} is {self.lines} lines (limit {FUNCTION_LIMIT})"
        return f"{self.path}:{self.line}: file is {self.lines} lines (limit {FILE_LIMIT})"


def python_files(root: Path) -> Iterator[Path]:
    for top in ROOTS:
        base = root / top
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(root)
            if SKIP_DIRS.intersection(rel.parts) or any(part.endswith(".egg-info") for part in rel.parts):
                continue
            if any(rel.as_posix() == ex or rel.as_posix().startswith(ex + "/") for ex in EXCLUDED):
                continue
            yield path


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + node.name
            yield name, node
            yield from _functions(node, name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:  # functions defined under if/try/with at any level
            yield from _functions(node, prefix)


def check_file(path: Path, rel: str) -> list[Violation]:
    text = path.read_text(encoding="utf-8")
    found: list[Violation] = []
    total = len(text.splitlines())
    if total > FILE_LIMIT:
        found.append(Violation(rel, 1, "", total))
    for name, node in _functions(ast.parse(text, filename=rel)):
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > FUNCTION_LIMIT:
            found.append(Violation(rel, node.lineno, name, length))
    return found


def load_allowlist(path: Path) -> dict[str, str]:
    """``{key: reason}`` from the allow-list file (missing file: nothing allowed)."""
    if not path.exists():
        return {}
    with path.open("rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - {"functions", "files"}
    if unknown:
        raise ValueError(f"{path}: unknown tables {sorted(unknown)}; expected [functions] and [files]")
    allowed: dict[str, str] = {}
    for table in ("functions", "files"):
        for key, reason in data.get(table, {}).items():
            if not isinstance(reason, str) or not reason.strip():
                raise ValueError(f"{path}: [{table}] {key!r} needs a reason (a non-empty string)")
            if (table == "functions") != (":" in key):
                raise ValueError(f"{path}: [{table}] {key!r}: functions are 'path:NAME', files are 'path'")
            allowed[key] = reason
    return allowed


def check(root: Path, allowlist: Path) -> list[str]:
    """The report lines: violations not allow-listed, then allow-list entries that match none."""
    allowed = load_allowlist(allowlist)
    violations = [v for path in python_files(root) for v in check_file(path, path.relative_to(root).as_posix())]
    lines = [str(v) for v in violations if v.key not in allowed]
    used = {v.key for v in violations}
    lines += [f"{allowlist}: allow-list entry {key!r} matches no violation (remove it)"
              for key in allowed if key not in used]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--allowlist", type=Path, help=f"default: ROOT/{DEFAULT_ALLOWLIST.as_posix()}")
    args = parser.parse_args(argv)
    report = check(args.root, args.allowlist or args.root / DEFAULT_ALLOWLIST)
    for line in report:
        print(line)
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
