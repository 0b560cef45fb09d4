"""optimizer: lsq — finite-difference least-squares refinement, every simulator run counted.

A real, tiny campaign: rock-salt NiO (8 atoms, 24 coordinates), a target made by perturbing it, PDF by
pdffit2, run by the local runner into an embedded store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from campaign_files import campaign_yaml
from pymatgen.core import Structure

from aso_workflows.campaign.local import LocalCampaignRunner
from aso_workflows.config import load_config
from aso_workflows.optimizers.lsq import LeastSquaresRefinement, residual_vector, simulator_calls
from aso_workflows.optimizers.sampling import PerturbationSampler
from aso_workflows.structures import violates_min_distance

DATA = Path(__file__).resolve().parents[1] / "aso_workflows" / "data"
MIN_DISTANCES = {"Ni-O": 1.7, "O-O": 2.2, "Ni-Ni": 2.2}


def nio_campaign(tmp_path: Path, name: str, **fields) -> Path:
    """NiO against a seeded perturbation of itself (0.1–0.2 Å per atom); lsq with 2-atom blocks."""
    start = Structure.from_file(str(DATA / "NiO.cif"))
    target = tmp_path / "target.cif"
    if not target.exists():
        sampler = PerturbationSampler(
            min_displacement=0.1, max_displacement=0.2, amplitude="atom", min_distances=MIN_DISTANCES, seed=5
        )
        sampler.sample(start, 1)[0].to(filename=str(target))
    pair = {
        "start": str(DATA / "NiO.cif"),
        "targets": [{"technique": "pdf", "structure": str(target)}],
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.2},
        "min_distances": MIN_DISTANCES,
    }
    defaults = {
        "budget": 12,
        "initial_size": 3,
        "batch_size": 2,
        "seed": 3,
        "optimizer": "lsq",
        "surrogate": None,
        "proposal": None,
        "output": str(tmp_path / name),
    }
    return campaign_yaml(tmp_path, name, pair=pair, **{**defaults, **fields})


def run(path: Path):
    return LocalCampaignRunner(progress=False).run(load_config(path))


def test_residuals_square_to_the_objective(tmp_path, one_torch_thread):
    """r·r of an evaluated structure is its stored mismatch (the refinement minimises the campaign's own)."""
    from aso_workflows.optimizers.lsq import _residuals_of, _stored_residuals

    state = run(nio_campaign(tmp_path, "res", budget=4, initial_size=3))
    for e in state.evaluations():
        r = _stored_residuals(state, e)
        assert float(r @ r) == pytest.approx(e["objective"], rel=1e-9)
        again, calls = _residuals_of(state, Structure.from_dict(e["structure"]), tmp_path / "w")
        assert calls == 1 and np.allclose(again, r, rtol=1e-9, atol=1e-12)
    spectra = {t: state.targets[t] for t in state.targets}
    assert float(np.abs(residual_vector(state.objective, spectra)).max()) == 0.0


def test_lsq_lowers_the_mismatch_and_every_simulation_is_counted(tmp_path, one_torch_thread):
    state = run(nio_campaign(tmp_path, "lsq", lsq={"atoms_per_step": 2}))
    assert state.doc["status"] == "completed" and state.n_used() == 12
    evals = state.evaluations()
    proposals = {p["_id"]: p for p in state.proposals()}
    mine = [e for e in evals if e["kind"] == "lsq"]
    assert len(mine) == 8
    best_initial = min(e["objective"] for e in evals if e["kind"] in ("start", "initial"))
    assert min(e["objective"] for e in mine) < 0.7 * best_initial

    # accounting: each batch of 2 trials carries one Jacobian of 2 atoms × 3 coordinates (6 forward runs)
    # on its first proposal, unless the head did not move (the cached Jacobian is reused: nothing charged)
    infos = [proposals[e["proposal_id"]]["predicted"]["lsq"] for e in mine]
    assert all(i["parameters"] == 6 for i in infos)
    charged = [i["jacobian_calls"] for i in infos]
    assert set(charged) <= {0, 6} and charged[0] == 6
    assert sum(charged) == 6 * len({i["jacobian"] for i in infos})  # each Jacobian charged once
    calls = simulator_calls(evals, proposals)
    assert calls[:4] == [1, 2, 3, 4]  # start and initial structures: one run each
    assert calls[-1] == 12 + sum(charged)
    assert np.all(np.diff(calls) >= 1)

    # proposals keep the minimum distances; the Jacobian cache is on disk
    for e in mine:
        assert not violates_min_distance(Structure.from_dict(e["structure"]), state.min_distances)
    assert len(list((Path(state.workdir) / "lsq").glob("*.npz"))) == len({i["jacobian"] for i in infos})

    # the path replays deterministically from the store: the head is the best lsq/initial structure
    path = LeastSquaresRefinement(atoms_per_step=2).replay(state)
    assert path.head["objective"] == min(e["objective"] for e in evals)


def test_damping_ladder_and_blocks():
    opt = LeastSquaresRefinement(atoms_per_step=3)
    assert opt.ladder(1.0, 1) == [1.0]
    assert opt.ladder(1.0, 5) == pytest.approx([0.01, 0.1, 1.0, 10.0, 100.0])
    blocks = opt.blocks(8, seed=0)
    assert sorted(a for b in blocks for a in b) == list(range(8)) and [len(b) for b in blocks] == [3, 3, 2]
    assert opt.blocks(8, seed=0) == blocks and LeastSquaresRefinement().blocks(8, 0) == [list(range(8))]
