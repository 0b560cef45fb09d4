"""ActiveStructOpt with its default proposal settings, and ASO + refinement, as real tiny campaigns.

NiO (8 atoms), a target made by moving its atoms 0.1–0.25 Å, PDF simulated with pdffit2, a small
surrogate; run by the local runner into an embedded store, as ``aso run`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from campaign_files import campaign_yaml
from pymatgen.core import Structure

from aso_workflows.campaign.local import LocalCampaignRunner
from aso_workflows.campaign.state import CampaignState
from aso_workflows.config import load_config
from aso_workflows.optimizers.aso_refine import refine_structure
from aso_workflows.optimizers.diffpy_refine import pdf_calculations
from aso_workflows.optimizers.sampling import PerturbationSampler, min_distance_matrix
from aso_workflows.results import Campaign
from aso_workflows.spectra.pdf import PDFSimulator

DATA = Path(__file__).resolve().parents[1] / "aso_workflows" / "data"
MIN_DISTANCES = {"Ni-O": 1.7, "O-O": 2.2, "Ni-Ni": 2.2}
#: small and fast; the proposals keep the defaults (lr 1e-3 × 100 steps, starts: every evaluated
#: structure + fresh perturbations of the start, exploitation search 2 × the starts and steps on a CPU)
#: except the number of starts (128 → 16): 128 starts took 45 s per proposal (256 × 250: 220 s) for
#: this 8-atom cell on the loaded 2-core machine
SURROGATE = {"n_models": 3, "epochs": 60, "patience": 20, "progress": False, "device": "cpu"}
PROPOSAL = {"n_starts": 16, "progress": False, "device": "cpu"}


def _target(tmp_path: Path) -> Path:
    start = Structure.from_file(str(DATA / "NiO.cif"))
    path = tmp_path / "target.cif"
    sampler = PerturbationSampler(
        min_displacement=0.15, max_displacement=0.25, amplitude="atom", min_distances=MIN_DISTANCES, seed=5
    )
    sampler.sample(start, 1)[0].to(filename=str(path))
    return path


def _campaign(tmp_path: Path, name: str, optimizer: str, **fields) -> CampaignState:
    pair = {
        "start": str(DATA / "NiO.cif"),
        "targets": [{"technique": "pdf", "structure": str(_target(tmp_path))}],
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.3},
        "min_distances": MIN_DISTANCES,
    }
    settings = {
        "budget": 15,
        "initial_size": 6,
        "batch_size": 2,
        "seed": 1,
        "optimizer": optimizer,
        "surrogate": SURROGATE,
        "proposal": PROPOSAL,
        "surrogate_refine": None,  # the product's default local search (8 best + 2 fresh)
        "acquisition": {"lam": 0.1, "exploit_last": 4},
        "output": str(tmp_path / name),
        **fields,
    }
    path = campaign_yaml(tmp_path, name, pair=pair, **settings)
    return LocalCampaignRunner(progress=False).run(load_config(path))


@pytest.fixture(scope="module")
def aso_state(tmp_path_factory, one_torch_thread) -> CampaignState:
    return _campaign(tmp_path_factory.mktemp("aso"), "tiny-aso", "aso")


@pytest.fixture(scope="module")
def aso_gnn_state(tmp_path_factory, one_torch_thread) -> CampaignState:
    """The same campaign with the GNN ensemble alone (``surrogate.prior: false``, as before issue 20)."""
    return _campaign(
        tmp_path_factory.mktemp("aso-gnn"), "tiny-aso-gnn", "aso", surrogate={**SURROGATE, "prior": False}
    )


def test_tiny_campaign_with_default_proposals_beats_its_start(aso_state):
    state = aso_state
    evals = state.evaluations()
    assert state.doc["status"] == "completed" and len(evals) == 15
    start = next(e["objective"] for e in evals if e["kind"] == "start")
    best_initial = min(e["objective"] for e in evals if e["kind"] in ("start", "initial"))
    proposed = [e for e in evals if e["kind"] not in ("start", "initial")]
    kinds = [e["kind"] for e in proposed]
    assert set(kinds) <= {"aso", "fallback"}
    assert kinds.count("fallback") < len(kinds) / 2, kinds
    # what `aso status` shows: simulations per kind, fallbacks counted apart
    by_kind = Campaign(state).summary().completed_by_kind
    assert by_kind == {
        k: n
        for k, n in {
            "start": 1,
            "initial": 6,
            "aso": kinds.count("aso"),
            "fallback": kinds.count("fallback"),
        }.items()
        if n
    }
    best = min(e["objective"] for e in proposed)
    assert best < start / 3, (best, start)
    assert best < best_initial / 2, (best, best_initial)  # the proposals, not the initial data, did it
    # the surrogate is pdffit2's model itself (a simulated PDF target: no residual to learn), so each
    # proposal is a multi-start L-BFGS through it (surrogate_refine.search: local): the 8 best evaluated
    # so far (7 before iteration 1: the start and 6 initial) + 2 fresh
    for p in state.proposals():
        if p["kind"] in ("aso", "fallback"):
            s = p["predicted"]["search"]
            seen = sum(1 for e in evals if e["iteration"] < p["iteration"])
            assert s["phase"] == "local" and s["fresh_starts"] == 2, s
            assert s["n_starts"] == min(8, seen) + 2 and s["evaluations"] > 10, (s, seen)
    models = list(state.db.models.find({"campaign": state.name}))
    assert all(m["metrics"]["residual"].startswith("skipped") for m in models)
    assert all(m["metrics"]["prior"]["max_rel_error"] < 1e-10 for m in models)


def test_gnn_alone_searches_by_gradient_with_its_sizes(aso_gnn_state):
    state = aso_gnn_state
    # the search sizes are on the proposals: normal search, then the exploitation phase's larger one
    searches = [p["predicted"]["search"] for p in state.proposals() if p["kind"] in ("aso", "fallback")]
    assert {(s["phase"], s["n_starts"], s["steps"]) for s in searches} == {
        ("explore", 16, 100),
        ("exploit", 32, 200),
    }
    assert all(s["fresh_starts"] == s["n_starts"] - min(s["n_starts"], n) for s, n in _with_sizes(state))
    evals = state.evaluations()
    start = next(e["objective"] for e in evals if e["kind"] == "start")
    assert min(e["objective"] for e in evals if e["kind"] not in ("start", "initial")) < start / 3


def _with_sizes(state: CampaignState):
    """Each searched proposal with the number of structures evaluated before its iteration."""
    evals = state.evaluations()
    for p in state.proposals():
        if p["kind"] in ("aso", "fallback"):
            n = sum(e["iteration"] < p["iteration"] for e in evals)
            yield p["predicted"]["search"], n


def test_refinement_polishes_a_structure_and_counts_its_calculations(nio):
    sim = PDFSimulator()
    target_s = PerturbationSampler(
        min_displacement=0.1, max_displacement=0.2, amplitude="atom", seed=2
    ).sample(nio, 1)[0]
    target = sim.simulate(target_s).y
    near = PerturbationSampler(min_displacement=0.03, max_displacement=0.06, amplitude="atom", seed=3).sample(
        target_s, 1
    )[0]
    dmin = min_distance_matrix(nio, MIN_DISTANCES)
    polished, info = refine_structure(near, target, sim, dmin, max_calls=6)
    before = np.mean((sim.simulate(near).y - target) ** 2)
    after = np.mean((sim.simulate(polished).y - target) ** 2)
    assert after < before / 10
    assert 1 <= info["steps"] and info["pdf_calculations"] <= 6
    assert info["pdf_calculations"] >= info["steps"] + 1  # the first call also evaluates the start
    none, info0 = refine_structure(near, target, sim, dmin, max_calls=0)
    assert none is near and info0["pdf_calculations"] == 0 and info0["steps"] == 0


def test_aso_refine_campaign_counts_every_pdf_calculation(tmp_path, one_torch_thread):
    state = _campaign(
        tmp_path,
        "tiny-refine",
        "aso-refine",
        budget=11,
        refine={"max_calls": 6, "top": 1},
        acquisition={"lam": 0.1, "exploit_last": 2},
    )
    evals = state.evaluations()
    assert state.doc["status"] == "completed" and len(evals) == 11
    props = {p["_id"]: p for p in state.proposals()}
    refined = [
        props[e["proposal_id"]] for e in evals if (props[e["proposal_id"]]["predicted"] or {}).get("refine")
    ]
    per_iteration: dict[int, int] = {}
    for p in refined:
        per_iteration[p["iteration"]] = per_iteration.get(p["iteration"], 0) + 1
        r = p["predicted"]["refine"]
        assert 2 <= r["pdf_calculations"] <= 6
    assert refined and set(per_iteration.values()) == {1}  # top: 1 of the q = 2 of each iteration
    assert {p["kind"] for p in refined} <= {"aso-refine", "fallback"}
    calc = pdf_calculations(evals, props)
    extra = sum(p["predicted"]["refine"]["pdf_calculations"] for p in refined)
    best_first = [(props[e["proposal_id"]]["predicted"] or {}).get("refine_best") for e in evals]
    extra += sum(r["pdf_calculations"] for r in best_first if r)
    assert any(r and r["origin_kind"] == "start" for r in best_first)  # the start is refined first
    assert calc[-1] == len(evals) + extra
    start = next(e["objective"] for e in evals if e["kind"] == "start")
    assert min(e["objective"] for e in evals if e["kind"] == "aso-refine") < start / 3
    # a polished proposal is better than the surrogate alone predicted it (the refinement moved it)
    assert any(p["predicted"]["refine"]["steps"] >= 1 and p["predicted"]["refine"]["used"] for p in refined)
