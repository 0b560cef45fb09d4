"""Imports go down only: no module imports from a later layer of ``docs/architecture.md``, none in a circle.

Every import of the package is read from its source (``scripts/import_layers.py``), those inside functions
and under ``if TYPE_CHECKING:`` included; the layers are the table in ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def il():
    spec = importlib.util.spec_from_file_location("import_layers", ROOT / "scripts" / "import_layers.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_every_module_has_a_layer_and_no_import_climbs_or_circles(il):
    graph = il.read_graph()
    layers = il.read_layers()
    assert [n for n, _ in layers] == list(range(1, len(layers) + 1))
    assert [m for m in graph.modules if il.layer_of(m, layers) is None] == []
    assert il.cycles(graph) == []
    climbing = [
        f"{i.source}:{i.line} -> {i.target} (layer {a} -> {b})" for i, a, b in il.climbs(graph, layers)
    ]
    assert climbing == []
    # the checker sees what it must: the Slurm runner lives with the cluster code and imports the campaign
    assert il.layer_of("cluster.runner", layers) > il.layer_of("campaign.local", layers)
    assert any(i.local for i in graph.imports) and any(i.type_only for i in graph.imports)


def test_the_checker_finds_a_cycle_and_a_climb_hidden_in_a_function(il, tmp_path):
    pkg = tmp_path / "aso_workflows"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from aso_workflows.low import b\n"
        "def f():\n    from aso_workflows import high\n    return high\n"
    )
    (pkg / "low" / "b.py").write_text("from aso_workflows.low.a import f\n")
    (pkg / "high.py").write_text("from . import low\n")
    doc = tmp_path / "arch.md"
    doc.write_text(
        "## Layers run one way\n\n| layer | modules | what |\n| ---: | --- | --- |\n"
        "| 1 | `aso_workflows`, `low/` | below |\n| 2 | `high` | above |\n\n## Next\n"
    )
    graph = il.read_graph(pkg)
    layers = il.read_layers(doc)
    assert il.cycles(graph) == [["low.a", "low.b"]]
    ((imp, a, b),) = il.climbs(graph, layers)
    assert (imp.source, imp.target, imp.local, a, b) == ("low.a", "high", True, 1, 2)
    assert {(i.source, i.target) for i in graph.imports} >= {("high", "low"), ("low.b", "low.a")}
