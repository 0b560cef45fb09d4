"""The package's imports counted from its source: modules, import cycles, imports that climb a layer, and
the longest functions.

    python scripts/import_layers.py            # the counts, then every cycle and climbing import
    python scripts/import_layers.py --json     # the same as JSON

Every ``import`` statement of every module of ``aso_workflows`` is read with :mod:`ast`, those inside
functions and under ``if TYPE_CHECKING:`` included. ``from aso_workflows.a import b`` is an import of the
module ``a.b`` when that is a module, else of ``a`` (one import per statement and module reached);
importing a submodule is not counted as an import of its package's ``__init__`` (which Python runs too).

The layers are the table "Layers run one way" of ``docs/architecture.md`` (the one place they are
written): each row names its modules as ``name`` (a module or package: ``spectra/spectrum``,
``campaign/``, ``cli``); a module belongs to the row of the longest name that matches it. A module may
import from its own layer and the layers listed before it; ``tests/test_import_layers.py`` fails on a
cycle or on an import that climbs.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aso_workflows"
DOC = ROOT / "docs" / "architecture.md"
PREFIX = "aso_workflows"

__all__ = [
    "Import",
    "Graph",
    "read_graph",
    "read_layers",
    "layer_of",
    "cycles",
    "climbs",
    "function_lengths",
    "counts",
]


@dataclass(frozen=True)
class Import:
    """One import statement: ``source`` imports ``target`` (module names without the package prefix)."""

    source: str
    target: str
    line: int
    local: bool  # inside a function
    type_only: bool  # under ``if TYPE_CHECKING:``


@dataclass
class Graph:
    """The package's modules (``spectra.pdf``; a package as its ``__init__``: ``spectra``) and imports."""

    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)

    def edges(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            if imp.target != imp.source:
                out[imp.source].add(imp.target)
        return out


def _module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or PREFIX  # the package itself: "aso_workflows"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: set[str]) -> None:
        self.module, self.is_package, self.modules = module, is_package, modules
        self.depth = 0
        self.type_only = 0
        self.found: list[tuple[str, int, bool, bool]] = []

    def _add(self, target: str, line: int) -> None:
        self.found.append((target, line, self.depth > 0, self.type_only > 0))

    def _resolve(self, name: str) -> str | None:
        """``aso_workflows.a.b`` → ``a.b`` (or the longest module prefix); other packages → None."""
        if name != PREFIX and not name.startswith(PREFIX + "."):
            return None
        parts = name.split(".")[1:]
        while parts and ".".join(parts) not in self.modules:
            parts.pop()
        return ".".join(parts) or PREFIX

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815 - ast.NodeVisitor's naming

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.type_only += 1
            for child in node.body:
                self.visit(child)
            self.type_only -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            target = self._resolve(alias.name)
            if target is not None:
                self._add(target, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            parts = self.module.split(".") if self.module else []
            if not self.is_package:
                parts = parts[:-1]
            parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
            base = ".".join([PREFIX, *parts, *([base] if base else [])])
        targets = []  # one import per module a statement reaches (``from a import b, c`` of module a: one)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            target = self._resolve(full if full.removeprefix(PREFIX + ".") in self.modules else base)
            if target is not None and target not in targets:
                targets.append(target)
        for target in targets:
            self._add(target, node.lineno)


def read_graph(package: Path = PACKAGE) -> Graph:
    """Every module of ``package`` and every import of the package it makes."""
    g = Graph()
    for path in sorted(package.rglob("*.py")):
        g.modules[_module_name(path, package)] = path
    names = set(g.modules)
    for module, path in g.modules.items():
        v = _Visitor(module, path.name == "__init__.py", names)
        v.visit(ast.parse(path.read_text(), filename=str(path)))
        g.imports += [Import(module, t, line, local, type_only) for t, line, local, type_only in v.found]
    return g


# ---- layers ------------------------------------------------------------------------------------------------
_ROW = re.compile(r"^\|\s*(\d+)\s*\|(.+?)\|.*\|\s*$")


def read_layers(doc: Path = DOC) -> list[tuple[int, list[str]]]:
    """The rows of the layer table in ``doc``: ``[(layer number, [module names as written]), ...]``."""
    text = doc.read_text()
    section = text.split("## Layers run one way", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = _ROW.match(line.strip())
        if m:
            rows.append((int(m.group(1)), re.findall(r"`([^`]+)`", m.group(2))))
    if not rows:
        raise ValueError(f"no layer table in {doc}")
    return rows


def layer_of(module: str, layers: list[tuple[int, list[str]]]) -> int | None:
    """The layer of ``module`` (``spectra.pdf``): the row whose name matches it longest."""
    path = module.replace(".", "/")
    best: tuple[int, int] | None = None  # (match length, layer)
    for number, names in layers:
        for name in names:
            if name.endswith("/"):
                ok = path == name[:-1] or path.startswith(name)
            else:
                ok = path == name
            if ok and (best is None or len(name) > best[0]):
                best = (len(name), number)
    return None if best is None else best[1]


def climbs(graph: Graph, layers: list[tuple[int, list[str]]]) -> list[tuple[Import, int, int]]:
    """Every import of a module in a later layer than the importer's: ``(import, its layer, target's)``."""
    out = []
    for imp in graph.imports:
        a, b = layer_of(imp.source, layers), layer_of(imp.target, layers)
        if a is not None and b is not None and b > a:
            out.append((imp, a, b))
    return out


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    edges = graph.edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


# ---- functions ---------------------------------------------------------------------------------------------
def _functions(node: ast.AST, module: str, prefix: str = "") -> list[tuple[int, str]]:
    out = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
            name = f"{prefix}{child.name}"
            out.append((int(child.end_lineno or child.lineno) - start + 1, f"{module}:{name}"))
            out += _functions(child, module, name + ".")
        elif isinstance(child, ast.ClassDef):
            out += _functions(child, module, f"{prefix}{child.name}.")
    return out


def function_lengths(package: Path = PACKAGE) -> list[tuple[int, str]]:
    """``(lines, "module:qualified.name")`` of every function and method, longest first (decorators and
    docstring included, as an editor shows the function)."""
    out = []
    for path in sorted(package.rglob("*.py")):
        out += _functions(ast.parse(path.read_text(), filename=str(path)), _module_name(path, package))
    return sorted(out, reverse=True)


def counts(package: Path = PACKAGE, doc: Path = DOC) -> dict:
    """The numbers the architecture note quotes."""
    g = read_graph(package)
    layers = read_layers(doc)
    unplaced = sorted(m for m in g.modules if layer_of(m, layers) is None)
    funcs = function_lengths(package)
    return {
        "modules": len(g.modules),
        "imports": len(g.imports),
        "function_local_imports": sum(i.local for i in g.imports),
        "type_checking_imports": sum(i.type_only for i in g.imports),
        "layers": len(layers),
        "cycles": cycles(g),
        "climbing_imports": [
            f"{i.source}:{i.line} -> {i.target} (layer {a} -> {b})" for i, a, b in climbs(g, layers)
        ],
        "modules_without_layer": unplaced,
        "longest_functions": [f"{n} lines {name}" for n, name in funcs[:5]],
        "functions_over_80_lines": sum(n > 80 for n, _ in funcs),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = ap.parse_args(argv)
    c = counts()
    if args.json:
        print(json.dumps(c, indent=1))
        return
    print(
        f"modules {c['modules']}, imports {c['imports']} ({c['function_local_imports']} inside functions, "
        f"{c['type_checking_imports']} for type checking only), layers {c['layers']}"
    )
    print(f"import cycles {len(c['cycles'])}, imports that climb a layer {len(c['climbing_imports'])}")
    print(f"functions over 80 lines {c['functions_over_80_lines']}; longest: {c['longest_functions'][0]}")
    for cyc in c["cycles"]:
        print("cycle:", " <-> ".join(cyc))
    for line in c["climbing_imports"]:
        print("climbs:", line)
    for m in c["modules_without_layer"]:
        print("no layer:", m)


if __name__ == "__main__":
    main()
