"""The small PDF campaign file the fault and resume tests start from (one place instead of a copy each)."""

from __future__ import annotations

from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parents[1] / "aso_workflows" / "data"


def campaign_yaml(tmp_path: Path, name: str, **fields) -> Path:
    """Write ``<tmp_path>/<name>.yaml``: LiNiO2 (12 atoms) against its own PDF, budget 6, q = 2.

    ``fields`` override or add campaign fields (``optimizer``, ``seed``, ``surrogate``, ...).
    """
    doc = {
        "name": name,
        "start": str(DATA / "LiNiO2.cif"),
        "targets": [{"technique": "pdf", "structure": str(DATA / "LiNiO2.cif")}],
        "budget": 6,
        "initial_size": 3,
        "batch_size": 2,
        "seed": 0,
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.2},
        "min_distances": {"Ni-O": 1.6, "Li-O": 1.6, "O-O": 2.0},
        "output": str(tmp_path / "out"),
        **fields,
    }
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p
