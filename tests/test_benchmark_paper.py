"""Bookkeeping of the benchmark's paper protocol (``--paper``): near/far stratification of the ``ht``
cases, DiffPy counted three ways and lsq per simulator run on tiny real refinements, the targets check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure

DATA = Path(__file__).resolve().parents[1] / "aso_workflows" / "data"
MIN_DISTANCES = {"Ni-O": 1.7, "O-O": 2.2, "Ni-Ni": 2.2}


def test_spread_order_is_a_permutation_whose_prefixes_spread_out(sd):
    import cases

    for n in (1, 2, 5, 16, 31):
        order = cases.spread_order(n)
        assert sorted(order) == list(range(n))
    assert cases.spread_order(4) == [2, 1, 3, 0]
    # the first half of the order covers both halves of the range
    order = cases.spread_order(16)[:4]
    assert min(order) < 8 <= max(order)


def _fake_ht(folder: Path, rms: dict[str, float], overlapping: set[str]) -> None:
    """An ``ht`` folder: NiO start/target pairs with the given RMS metadata; some targets overlap."""
    start = Structure.from_file(str(DATA / "NiO.cif"))
    for sub in ("start", "target"):
        (folder / sub).mkdir(parents=True)
    meta = []
    for cid, d in rms.items():
        start.to(filename=str(folder / "start" / f"{cid}.cif"))
        t = start.copy()
        if cid in overlapping:  # an atom 0.2 Å from another: a campaign refuses this target
            t.replace(1, t[1].species, coords=t[0].coords + [0.2, 0, 0], coords_are_cartesian=True)
        t.to(filename=str(folder / "target" / f"{cid}.cif"))
        meta.append({"case": cid, "formula": "NiO", "natoms": len(start), "rms_disp_A": d})
    (folder / "cases.json").write_text(json.dumps(meta))


def test_stratified_cases_split_near_far_nest_and_skip_refused_pairs(sd, tmp_path, monkeypatch):
    import cases

    rms = {f"{i:03d}": d for i, d in enumerate([0.2, 0.4, 0.6, 0.8, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0])}
    _fake_ht(tmp_path, rms, overlapping={"005"})  # a far one (2.0 Å)
    monkeypatch.setattr(cases, "HT_DIR", tmp_path)

    assert cases.unusable(cases.ht_case("005")) is not None
    assert cases.unusable(cases.ht_case("004")) is None
    picks = {n: [c.name for c in cases.stratified_ht_cases(n)] for n in (2, 4, 6, 8)}
    for n, names in picks.items():
        got = cases.stratified_ht_cases(n)
        assert sum(cases.stratum(c) == "near" for c in got) == n // 2
        assert sum(cases.stratum(c) == "far" for c in got) == n - n // 2
        assert "ht-005" not in names
    for a, b in ((2, 4), (4, 6), (6, 8)):
        assert set(picks[a]) <= set(picks[b])
    # the near pool sorted by distance is 0.2, 0.4, 0.6, 0.8: two cases spread over it are 0.6 and 0.4
    assert sorted(
        c.info["rms_disp_A"] for c in cases.stratified_ht_cases(4) if cases.stratum(c) == "near"
    ) == [
        0.4,
        0.6,
    ]
    with pytest.raises(ValueError, match="only 4 near"):
        cases.stratified_ht_cases(10)
    # the threshold moves cases between strata
    assert cases.stratum(cases.ht_case("004"), threshold=2.0) == "near"


def test_per_calculation_view_takes_the_best_reached_within_n_calculations(sd):
    run = {"case": "c", "method": "diffpy", "seed": 0, "start_objective": 1.0, "curve": [1.0, 0.5, 0.2]}
    view = sd.per_calculation(run, 6, [1, 3, 6], "calc")
    assert view["method"] == "diffpy/calc"
    assert view["curve"] == [1.0, 1.0, 0.5, 0.5, 0.5, 0.2]
    # nothing reached yet: the start's mismatch
    assert sd.per_calculation(run, 2, [4, 5, 6])["curve"] == [1.0, 1.0]


def test_targets_check_ratios_per_stratum(sd):
    def run(case, method, rel):
        return {"case": case, "method": method, "seed": 0, "start_objective": 2.0, "curve": [2.0, 2.0 * rel]}

    views = [
        run("n1", "aso", 0.01),
        run("n1", "random", 0.1),  # 10x: met
        run("n1", "rmc", 0.03),  # 3x: missed
        run("n1", "aso-refine/calc", 0.05),
        run("n1", "diffpy/calc", 0.02),  # aso-refine 2.5x diffpy: missed
        run("f1", "aso", 0.2),
        run("f1", "diffpy", 0.5),
        run("f1", "diffpy/calc", 0.1),
        run("f1", "diffpy/fd", 0.9),
    ]
    checks = {
        (c["stratum"], c["check"]): c
        for c in sd.check_targets(views, 2, {"n1": "near", "f1": "far"})["checks"]
    }
    assert checks[("near", "aso vs random (>= 5x lower)")]["met"]
    assert not checks[("near", "aso vs rmc (>= 5x lower)")]["met"]
    assert checks[("near", "aso vs rmc (>= 5x lower)")]["ratio_theirs_over_ours"] == pytest.approx(3.0)
    assert not checks[("near", "aso-refine within 2x of diffpy, per PDF calculation")]["met"]
    assert checks[("far", "aso|aso-refine vs diffpy, per simulation")]["met"]
    # ASO has no per-calculation view here: its simulations are its calculations
    assert not checks[("far", "aso|aso-refine vs diffpy, per PDF calculation")]["met"]
    assert checks[("far", "aso|aso-refine vs diffpy, per finite-difference forward call")]["met"]
    assert ("near", "aso vs gpbo (>= 5x lower)") not in checks  # no gpbo runs: no check


def test_diffpy_three_ways_and_lsq_per_run_on_tiny_refinements(sd, tmp_path, one_torch_thread):
    """Real campaigns on 8-atom NiO: DiffPy per structure, per pdffit2 calculation and per forward call
    of a finite-difference Jacobian (P + 1 per calculation); lsq per simulator run, its budget in runs."""
    from cases import BenchmarkCase

    from aso_workflows.optimizers.sampling import PerturbationSampler
    from aso_workflows.results import Campaign

    start = Structure.from_file(str(DATA / "NiO.cif"))
    target = tmp_path / "target.cif"
    sampler = PerturbationSampler(
        min_displacement=0.1, max_displacement=0.2, amplitude="atom", min_distances=MIN_DISTANCES, seed=5
    )
    sampler.sample(start, 1)[0].to(filename=str(target))
    case = BenchmarkCase(
        name="nio",
        start=DATA / "NiO.cif",
        target=target,
        source="generated",
        sampler={"min_displacement": 0.05, "max_displacement": 0.2},
        min_distances=MIN_DISTANCES,
        info={"rms_disp_A": 0.15},
    )
    s = sd.SuiteSettings(name="tiny-paper", budget=32, initial_size=3, batch_size=2, seeds=[0], device="cpu")
    doc = sd.run_suite([case], ["diffpy", "lsq"], s, tmp_path / "out", progress=False, strata={"nio": "near"})
    assert doc["failed_runs"] == [] and doc["skipped"] == {}
    runs = {r["method"]: r for r in doc["runs"]}

    # DiffPy: the calculations stored with its proposals, counted from the store by hand
    d = runs["diffpy"]
    stored = Campaign.open("sd-nio-diffpy-s0", sd.run_dir(tmp_path / "out", "nio", "diffpy", 0) / "store")
    props = {p["_id"]: p.get("predicted") or {} for p in stored.db.proposals.find({"campaign": stored.name})}
    calc = fd = 0
    expect_calc, expect_fd = [], []
    for e in stored.state.evaluations(status=None):
        info = props.get(str(e.get("proposal_id")), {}).get("diffpy")
        if info:
            assert info["parameters"] == 3 + 3 * len(start)  # a, b, c and every coordinate
            calc += info["pdf_calculations"]
            fd += info["pdf_calculations"] * (info["parameters"] + 1)
        else:
            calc, fd = calc + 1, fd + 1
        if e["status"] == "completed":
            expect_calc.append(calc)
            expect_fd.append(fd)
    assert d["calc"] == expect_calc[: len(d["curve"])] and d["fd"] == expect_fd[: len(d["curve"])]
    assert d["calc"][-1] > len(d["curve"])  # at least one refine step costs more than one calculation

    views, shown = sd.accounting_views(doc["runs"], ["diffpy", "lsq"], s.budget)
    assert shown == ["diffpy", "diffpy/calc", "lsq/calc", "diffpy/fd"]
    curves = {v["method"]: np.asarray(v["curve"]) for v in views}
    assert all(len(c) == s.budget for c in curves.values())
    # fewer structures reached per unit of cost: never better, and finite differences cost the most
    assert np.all(curves["diffpy"] <= curves["diffpy/calc"]) and np.all(
        curves["diffpy/calc"] <= curves["diffpy/fd"]
    )
    # one refine step by finite differences costs P + 1 = 28 forward calls: within 32 only the start and
    # the initial perturbations are reached
    assert d["fd"][s.initial_size + 1] > s.budget  # the first refinement's calculations, by differences
    initial_best = min(d["curve"][: s.initial_size + 1])
    assert curves["diffpy/fd"][-1] == pytest.approx(initial_best)
    assert curves["diffpy"][-1] < initial_best  # per structure the refinement did improve

    # lsq: its campaign budget raised in rounds until its simulator runs reach the suite's budget
    q = runs["lsq"]
    assert q["calc"][-1] >= s.budget
    jac = sum(
        int((p.get("predicted") or {}).get("lsq", {}).get("jacobian_calls", 0) or 0)
        for p in Campaign.open(
            "sd-nio-lsq-s0", sd.run_dir(tmp_path / "out", "nio", "lsq", 0) / "store"
        ).db.proposals.find({})
    )
    assert jac >= 3 * len(start)  # at least one full Jacobian
    assert q["calc"][-1] == q["n_completed"] + jac
    assert "lsq" not in curves  # shown per simulator run only

    # near/far tables and the target checks are written
    tables = json.loads((tmp_path / "out" / "results.json").read_text())["tables"]
    assert set(tables) == {"all", "near"}
    assert (tmp_path / "out" / "targets.json").is_file()
    # the equal-cost table: DiffPy by finite differences at 8 × the budget has gone past its initial data
    cost = json.loads((tmp_path / "out" / "equal_cost.json").read_text())
    fd_row = next(r for r in cost["rows"] if r["label"] == "diffpy/fd" and r["stratum"] == "all")
    assert cost["calculations"] == [32, 64, 128, 256]
    assert fd_row["rel@256"] <= fd_row["rel@32"]
    assert "### At equal cost beyond the budget" in (tmp_path / "out" / "table.md").read_text()


def test_equal_cost_rows_read_each_accounting_at_n_calculations(sd):
    run = {
        "case": "c",
        "method": "diffpy",
        "seed": 0,
        "start_objective": 2.0,
        "curve": [2.0, 1.0, 0.2],
        "calc": [1, 3, 5],
        "fd": [1, 20, 40],
    }
    rows = {r["label"]: r for r in sd.equal_cost_rows([run], ["diffpy"], [2, 4, 40, 80], None)}
    assert set(rows) == {"diffpy (per simulation)", "diffpy/calc", "diffpy/fd"}
    sim, calc, fd = rows["diffpy (per simulation)"], rows["diffpy/calc"], rows["diffpy/fd"]
    assert (sim["rel@2"], sim["reached@2"], sim["reached@4"]) == (0.5, "1/1", "0/1")
    assert [calc[f"rel@{n}"] for n in (2, 4, 40)] == [1.0, 0.5, 0.1]
    assert calc["reached@40"] == "0/1"
    assert [fd[f"rel@{n}"] for n in (2, 4, 40, 80)] == [1.0, 1.0, 0.1, 0.1]
    assert (fd["reached@40"], fd["reached@80"]) == ("1/1", "0/1")
