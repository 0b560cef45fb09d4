"""The one campaign-file builder of the test suite (every test that writes a campaign YAML uses it)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "aso_workflows" / "data"
EXAMPLE = ROOT / "examples" / "linio2_jt_pdf"
TINY_SURROGATE = {"n_models": 2, "hidden": 16, "n_layers": 2, "n_rbf": 16, "epochs": 12, "patience": 6}
"""A surrogate ensemble that trains in about a second on a dozen 12-atom structures."""

JT_PAIR = {
    "start": str(EXAMPLE / "start.cif"),
    "targets": [{"technique": "pdf", "structure": str(EXAMPLE / "target.cif")}],
    "sampler": {"min_displacement": 0.05, "max_displacement": 0.3},
    "min_distances": {"Ni-O": 1.7, "Li-O": 1.7, "O-O": 2.2},
}
"""The main job's LiNiO2 Jahn–Teller pair (12 atoms): start and distorted target, PDF."""

SELF_TARGET = {
    "start": str(DATA / "LiNiO2.cif"),
    "targets": [{"technique": "pdf", "structure": str(DATA / "LiNiO2.cif")}],
    "sampler": {"min_displacement": 0.05, "max_displacement": 0.2},
    "min_distances": {"Ni-O": 1.6, "Li-O": 1.6, "O-O": 2.0},
}
"""LiNiO2 against its own spectrum (the fault tests: the structure does not matter, the failures do)."""


def campaign_yaml(folder: Path, name: str, *, pair: dict | None = None, **fields) -> Path:
    """Write ``<folder>/<name>.yaml`` and return its path.

    Defaults: ``pair`` (:data:`JT_PAIR` unless given), budget 6, 3 initial structures, q = 2, seed 0,
    :data:`TINY_SURROGATE`, 8 proposal starts × 10 steps (with an exact prior: 3 + 1 L-BFGS starts of 30
    evaluations), output ``<folder>/out``. ``fields`` override or
    add campaign fields (``optimizer``, ``seed``, ``store``, ...); ``None`` removes a default.
    """
    doc = {
        "name": name,
        **(JT_PAIR if pair is None else pair),
        "budget": 6,
        "initial_size": 3,
        "batch_size": 2,
        "seed": 0,
        "surrogate": TINY_SURROGATE,
        "proposal": {"n_starts": 8, "steps": 10, "progress": False},
        # the exact PDF prior is searched by L-BFGS from the best structures: 3 + 1 fresh, 30 steps each
        "surrogate_refine": {"starts": 3, "fresh": 1, "max_evaluations": 30},
        "output": str(folder / "out"),
    }
    doc.update(fields)
    doc = {k: v for k, v in doc.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p
