"""Smoke test of the structure-determination benchmark harness on one tiny case (real campaigns)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest


def test_tiny_suite_writes_curves_table_and_plot(sd, tmp_path, one_torch_thread):
    s = sd.SuiteSettings(
        name="smoke",
        budget=8,
        initial_size=3,
        batch_size=2,
        seeds=[0],
        surrogate={"n_models": 2, "epochs": 4, "patience": 2, "hidden": 16, "n_rbf": 16},
        proposal={"n_starts": 4, "steps": 3},
        acquisition={"lam": 0.1, "exploit_last": 2},
        device="cpu",
    )
    cases = sd.resolve_cases(["linio2-jt-tiny"], tmp_path / "cases")
    doc = sd.run_suite(cases, ["aso", "random", "no-such-method"], s, tmp_path, progress=False)

    assert doc["failed_runs"] == []
    assert set(doc["skipped"]) == {"no-such-method"}
    assert {r["method"] for r in doc["runs"]} == {"aso", "random"}
    assert doc["same_initial_data"] == {"linio2-jt-tiny/s0": True}
    from aso_workflows.results import Campaign

    for r in doc["runs"]:
        curve = np.asarray(r["curve"])
        assert len(curve) == 8 and r["n_completed"] == 8
        # the curve is the running minimum of what the campaign's store recorded, simulation by simulation
        name = f"sd-{r['case']}-{r['method']}-s{r['seed']}"
        stored = Campaign.open(name, sd.run_dir(tmp_path, r["case"], r["method"], r["seed"]) / "store")
        evaluated = stored.structures()
        objectives = [e.objective for e in evaluated if e.objective is not None]
        assert len(objectives) == len(evaluated)
        assert np.allclose(curve, np.minimum.accumulate(objectives))
        assert curve[0] == pytest.approx(r["start_objective"])
    for name in ("results.json", "curves.csv", "table.md", "table.csv", "median_curves.png", "per_case.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    with open(tmp_path / "curves.csv") as fh:
        rows = list(csv.DictReader(fh))
    # ASO is also shown per calculation: the node-level surrogate's per-atom PDF rows cost pdffit2 time
    by_method: dict[str, list[float]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(float(row["best_objective"]))
    assert {m: len(v) for m, v in by_method.items()} == {"aso": 8, "aso/calc": 8, "random": 8}
    # more calculations than simulations: per calculation ASO is never ahead of itself per simulation
    assert all(c >= a for a, c in zip(by_method["aso"], by_method["aso/calc"], strict=True))
    aso_run = next(r for r in doc["runs"] if r["method"] == "aso")
    assert len(aso_run["calc"]) == 8 and aso_run["calc"][-1] > 8
    table = (tmp_path / "table.md").read_text()
    assert "| aso |" in table and "| random |" in table and "skipped" in table

    # resumable: a second call runs nothing and reads the finished runs back
    again = sd.run_suite(cases, ["aso", "random"], s, tmp_path, progress=False)
    assert json.dumps(again["runs"]) == json.dumps(doc["runs"])


@pytest.mark.parametrize(
    ("angles", "in_phase", "space_group"),
    [((0.0, 0.0, 8.0), (False, False, True), "P4/mbm"), ((6.0, 6.0, 8.0), (False, False, True), "Pnma")],
)
def test_octahedral_tilt_gives_the_glazer_space_group(angles, in_phase, space_group):
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from aso_workflows.testing.generators import cubic_perovskite, octahedral_tilt

    cubic = cubic_perovskite("Ca", "Ti", "O", a=3.84, supercell=2)
    tilted = octahedral_tilt(cubic, "Ti", "O", angles=angles, in_phase=in_phase)
    assert SpacegroupAnalyzer(tilted, symprec=0.01).get_space_group_symbol() == space_group
    # rigid tilts about z by 8°: the in-plane Ti–O bonds lengthen by 1/cos(8°), apical ones stay
    if angles == (0.0, 0.0, 8.0):
        d = sorted(
            n.nn_distance for s in tilted if s.specie.symbol == "Ti" for n in tilted.get_neighbors(s, 2.3)
        )
        assert d[0] == pytest.approx(1.92, abs=1e-3)
        assert d[-1] == pytest.approx(1.92 / np.cos(np.radians(8.0)), abs=1e-3)
