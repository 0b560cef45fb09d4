"""No function of the package over :data:`MAX_LINES` lines (docs/architecture.md, "small pieces").

A function's length runs from its ``def`` line to its last line (decorators not counted, nested
functions counted in their parent too). :data:`BEING_SPLIT` names the functions still over the limit
while their owners split them; an entry that is no longer needed fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aso_workflows"
MAX_LINES = 80

BEING_SPLIT: dict[str, str] = {
    # "path/inside/aso_workflows.py:Qualified.name": "owner (issue)"
}
"""Functions still over the limit, each with who is splitting it; empty once they have landed."""


def _walk(node: ast.AST, prefix: str, rel: str, out: dict[str, int]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{child.name}"
            out[f"{rel}:{name}"] = (child.end_lineno or child.lineno) - child.lineno + 1
            _walk(child, f"{name}.", rel, out)
        elif isinstance(child, ast.ClassDef):
            _walk(child, f"{prefix}{child.name}.", rel, out)
        else:
            _walk(child, prefix, rel, out)


def function_lengths() -> dict[str, int]:
    """``{"path:Qualified.name": lines}`` of every function and method of the package."""
    out: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        _walk(ast.parse(path.read_text()), "", path.relative_to(PACKAGE).as_posix(), out)
    return out


def test_no_function_over_the_limit():
    lengths = function_lengths()
    assert len(lengths) > 500  # the walk found the package's functions
    over = {k: n for k, n in lengths.items() if n > MAX_LINES and k not in BEING_SPLIT}
    assert not over, f"functions over {MAX_LINES} lines (split them): {over}"


def test_the_allow_list_only_names_functions_still_over_the_limit():
    lengths = function_lengths()
    stale = {k: lengths.get(k) for k in BEING_SPLIT if lengths.get(k, 0) <= MAX_LINES}
    assert not stale, f"no longer over {MAX_LINES} lines (or gone): remove from BEING_SPLIT: {stale}"
