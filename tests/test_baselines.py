"""Baselines (reverse Monte Carlo, GP-BO, DiffPy refinement) as optimisers of the campaign machinery.

Every campaign here is real and tiny: rock-salt NiO (8 atoms), a target made by perturbing it, PDF
simulated with pdffit2, a budget of 12 simulations, run by the local runner into an embedded store.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from campaign_files import campaign_yaml
from pymatgen.core import Structure

from aso_workflows.campaign.local import LocalCampaignRunner
from aso_workflows.campaign.state import CampaignState
from aso_workflows.config import ConfigOverrides, load_config
from aso_workflows.errors import InputError
from aso_workflows.optimizers.rmc import (
    ReverseMonteCarlo,
    RMCMove,
    acceptance_draw,
    metropolis_accept,
)
from aso_workflows.optimizers.sampling import PerturbationSampler
from aso_workflows.structures import min_distance_table, violates_min_distance

DATA = Path(__file__).resolve().parents[1] / "aso_workflows" / "data"
MIN_DISTANCES = {"Ni-O": 1.7, "O-O": 2.2, "Ni-Ni": 2.2}


def write_nio_campaign(tmp_path: Path, name: str, optimizer: str, **fields) -> Path:
    """A NiO PDF campaign whose target is a seeded perturbation of the start (up to 0.25 Å per atom)."""
    start = Structure.from_file(str(DATA / "NiO.cif"))
    target = tmp_path / "target.cif"
    if not target.exists():
        sampler = PerturbationSampler(
            min_displacement=0.1, max_displacement=0.25, min_distances=MIN_DISTANCES, seed=5
        )
        sampler.sample(start, 1)[0].to(filename=str(target))
    pair = {
        "start": str(DATA / "NiO.cif"),
        "targets": [{"technique": "pdf", "structure": str(target)}],
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.25},
        "min_distances": MIN_DISTANCES,
    }
    defaults: dict[str, Any] = {
        "budget": 12,
        "initial_size": 4,
        "seed": 3,
        "surrogate": None,
        "proposal": None,
    }
    defaults["output"] = str(tmp_path / name)
    return campaign_yaml(tmp_path, name, pair=pair, optimizer=optimizer, **{**defaults, **fields})


def run(path: Path, budget: int | None = None) -> CampaignState:
    config = load_config(path, ConfigOverrides(budget=budget))
    return LocalCampaignRunner(progress=False).run(config)


def fingerprints(state: CampaignState) -> list[str]:
    return [e["fingerprint"] for e in state.evaluations(status=None)]


def moved_atoms(a: Structure, b: Structure) -> list[int]:
    """Sites whose minimum-image Cartesian position differs by more than 1e-6 Å."""
    df = a.frac_coords - b.frac_coords
    df -= np.round(df)
    d = np.linalg.norm(df @ a.lattice.matrix, axis=1)
    return [int(i) for i in np.flatnonzero(d > 1e-6)]


# ---- reverse Monte Carlo ----------------------------------------------------------------------------
def test_metropolis_rule_by_hand():
    # downhill and equal moves are always accepted
    assert metropolis_accept(1.0, 0.9, 0.05, u=0.999)
    assert metropolis_accept(1.0, 1.0, 0.0, u=0.999)
    # uphill by 5 % at T = 0.05 (relative): p = exp(-0.05 / (0.05 * 1.0)) = 1/e = 0.3679
    assert metropolis_accept(1.0, 1.05, 0.05, u=0.36)
    assert not metropolis_accept(1.0, 1.05, 0.05, u=0.37)
    # the temperature is relative to the current mismatch: same ratio, same probability
    assert metropolis_accept(0.01, 0.0105, 0.05, u=0.36)
    assert not metropolis_accept(0.01, 0.0105, 0.05, u=0.37)
    # T = 0 is greedy
    assert not metropolis_accept(1.0, 1.0001, 0.0, u=0.0)


def test_replay_is_deterministic_and_follows_metropolis(nio):
    rmc = ReverseMonteCarlo(temperature=0.05)
    seed = 7
    objectives = [0.8, 0.9, None, 0.7, 2.0]  # None: a failed simulation, skipped
    moves = [
        RMCMove(structure=nio.copy(), objective=e, iteration=1 + k // 2, candidate=k % 2)
        for k, e in enumerate(objectives)
    ]
    chain = rmc.replay(nio, 1.0, moves, seed=seed, n_moves_total=10)
    # 0.8 < 1.0: accepted; 0.9 after 0.8: p = exp(-0.1 / (0.05 * 0.8)) = exp(-2.5) = 0.0821
    u1 = acceptance_draw(seed, moves[1].iteration, moves[1].candidate)
    expect_1 = u1 < math.exp(-2.5)
    # 0.7 downhill: accepted; 2.0 after 0.7: p = exp(-1.3 / 0.035) ~ 7e-17: rejected
    assert chain.accepted == [True, expect_1, True, False]
    assert chain.n_moves == 4 and chain.objective == 0.7
    again = rmc.replay(nio, 1.0, moves, seed=seed, n_moves_total=10)
    assert again.accepted == chain.accepted and again.objective == chain.objective
    # the draws depend on (seed, iteration, candidate) only
    assert acceptance_draw(seed, 1, 1) == u1 and acceptance_draw(seed + 1, 1, 1) != u1


def test_annealing_schedule_is_geometric():
    rmc = ReverseMonteCarlo(temperature=0.1, final_temperature=0.001)
    assert rmc.temperature_at(0, 11) == pytest.approx(0.1)
    assert rmc.temperature_at(5, 11) == pytest.approx(0.01)
    assert rmc.temperature_at(10, 11) == pytest.approx(0.001)
    assert ReverseMonteCarlo(temperature=0.1).temperature_at(10, 11) == 0.1


def test_moves_move_one_atom_and_respect_min_distances(nio, one_torch_thread):
    # tight limits and large steps: most draws are rejected (without any simulation)
    table = min_distance_table(["Ni", "O"], {"Ni-O": 2.0, "O-O": 2.8, "Ni-Ni": 2.8})
    species = [sp.symbol for sp in nio.species]
    dmin = np.array([[table[(a, b)] for b in species] for a in species])
    rmc = ReverseMonteCarlo(sigma=0.3)
    draws = []
    for k in range(12):
        moved, atom, step, tries = rmc.move(nio, dmin, seed=1, iteration=1, candidate=k)
        draws.append(tries)
        assert moved_atoms(nio, moved) == [atom]
        assert np.linalg.norm(step) > 0
        assert not violates_min_distance(moved, table)
        again = rmc.move(nio, dmin, seed=1, iteration=1, candidate=k)[0]
        assert np.allclose(again.cart_coords, moved.cart_coords)
    assert max(draws) > 1  # some draws were rejected and re-drawn
    with pytest.raises(InputError, match="rmc.sigma"):
        ReverseMonteCarlo(sigma=0.3, max_tries=1).move(nio, dmin * 0 + 10.0, seed=1, iteration=1, candidate=0)


def test_rmc_campaign_lands_in_store_and_resumes_identically(tmp_path, one_torch_thread):
    state = run(write_nio_campaign(tmp_path, "rmc-full", "rmc", rmc={"sigma": 0.08}))
    assert state.doc["status"] == "completed" and state.n_used() == 12
    evals = state.evaluations(status=None)
    kinds = [e["kind"] for e in evals]
    assert kinds.count("start") == 1 and kinds.count("initial") == 4 and kinds.count("rmc") == 7
    # every RMC candidate is the chain's current configuration with one atom moved
    rmc = state.config.section("rmc")
    initial = [e for e in evals if e["kind"] in ("start", "initial")]
    best0 = min(initial, key=lambda e: e["objective"])
    moves = [
        RMCMove(Structure.from_dict(e["structure"]), e["objective"], e["iteration"], e["candidate"])
        for e in evals
        if e["kind"] == "rmc"
    ]
    for it in sorted({m.iteration for m in moves}):
        before = rmc.replay(
            Structure.from_dict(best0["structure"]),
            best0["objective"],
            [m for m in moves if m.iteration < it],
            seed=state.config.seed,
            n_moves_total=7,
        )
        for m in (m for m in moves if m.iteration == it):
            assert len(moved_atoms(before.structure, m.structure)) == 1
    chain = rmc.chain_from_state(state)
    assert chain.n_moves == 7 and chain.objective <= best0["objective"] * 1.5
    # stop after 9 simulations (as if interrupted after iteration 2), resume to 12: same moves
    part = write_nio_campaign(tmp_path, "rmc-part", "rmc", rmc={"sigma": 0.08}, budget=9)
    first = run(part)
    assert first.n_used() == 9
    # the next move, derived from the store alone (nothing kept in memory), is the full run's move
    from aso_workflows.optimizers import ProposalContext

    ctx = ProposalContext(first, [], [], None, iteration=3, n_used=9, budget=12, q=2, seed=0)
    nxt = [p.structure for p in rmc.propose(ctx)]
    full_it3 = [Structure.from_dict(e["structure"]) for e in evals if e["iteration"] == 3]
    assert len(full_it3) == 2
    for a, b in zip(nxt, full_it3, strict=True):
        assert np.allclose(a.cart_coords, b.cart_coords)
    resumed = run(part, budget=12)
    assert resumed.n_used() == 12
    assert fingerprints(resumed) == fingerprints(state)


def test_rmc_config_errors_are_one_line(tmp_path):
    path = write_nio_campaign(tmp_path, "bad", "rmc", rmc={"sigma": -1})
    with pytest.raises(InputError, match=r"field 'rmc.sigma': Input should be greater than 0"):
        load_config(path)
    path = write_nio_campaign(tmp_path, "bad", "rmc", rmc={"sigmaa": 0.1})
    with pytest.raises(InputError, match=r"field 'rmc.sigmaa'"):
        load_config(path)


# ---- GP Bayesian optimisation -----------------------------------------------------------------------
TINY_GPBO = {"num_restarts": 2, "raw_samples": 64, "maxiter": 30}


def test_displacement_features_round_trip(nio):
    from aso_workflows.optimizers.gp_bo import DisplacementFeatures

    feats = DisplacementFeatures(reference=nio, box=0.5)
    assert feats.dim == 24
    assert np.allclose(feats.encode(nio), 0.5)  # the start is the centre of the cube
    x = np.random.default_rng(0).random(feats.dim)
    s = feats.decode(x)
    assert np.allclose(feats.encode(s), x, atol=1e-9)
    # a perturbed structure (every atom moved ≤ 0.5 Å, some across the cell boundary) comes back exactly
    for p in PerturbationSampler(min_displacement=0.3, max_displacement=0.5, seed=2).sample(nio, 3):
        back = feats.decode(feats.encode(p))
        assert np.allclose(back.frac_coords, p.frac_coords, atol=1e-9)
        assert np.allclose(
            np.linalg.norm(feats.displacements(p), axis=1), np.linalg.norm(feats.displacements(back), axis=1)
        )


def test_gpbo_repairs_candidates_that_break_min_distances(nio):
    from aso_workflows.optimizers.gp_bo import DisplacementFeatures, GPBayesOpt

    table = min_distance_table(["Ni", "O"], MIN_DISTANCES)
    species = [sp.symbol for sp in nio.species]
    dmin = np.array([[table[(a, b)] for b in species] for a in species])
    feats = DisplacementFeatures(reference=nio, box=2.0)
    disp = np.zeros((8, 3))
    ni, o = species.index("Ni"), species.index("O")
    disp[ni] = (nio.cart_coords[o] - nio.cart_coords[ni]) * 0.9  # Ni almost on top of O
    other = next(k for k, sp in enumerate(species) if sp == "O" and k != o)  # 2.95 Å from that O
    disp[other] = [0.05, 0.0, 0.0]
    assert violates_min_distance(feats.structure_from_displacements(disp), table)
    repaired, halvings = GPBayesOpt().repair(feats, disp, dmin)
    assert halvings >= 1 and not violates_min_distance(repaired, table)
    moved = feats.displacements(repaired)
    assert np.allclose(moved[other], [0.05, 0.0, 0.0])  # atoms not involved keep their move


def test_gpbo_campaign_lands_in_store(tmp_path, one_torch_thread):
    state = run(write_nio_campaign(tmp_path, "gpbo", "gpbo", gpbo=TINY_GPBO))
    assert state.doc["status"] == "completed" and state.n_used() == 12
    evals = state.evaluations(status=None)
    assert [e["kind"] for e in evals].count("gpbo") == 7
    table = state.min_distances
    box = state.config.sampler.max_displacement
    for p in (p for p in state.proposals() if p["kind"] == "gpbo"):
        s = Structure.from_dict(p["structure"])
        assert not violates_min_distance(s, table)
        gp = p["predicted"]["gpbo"]
        assert gp["box"] == box and gp["n_train"] >= 5 and gp["std_neg_log_mismatch"] >= 0
        assert p["predicted"]["objective"] > 0
        df = s.frac_coords - state.start.frac_coords
        df -= np.round(df)
        assert np.abs(df @ state.start.lattice.matrix).max() <= box + 1e-6
    # every evaluation was simulated once (distinct structures)
    assert len(set(fingerprints(state))) == 12
    # q = 1 (analytic LogEI) and q = 1 with a pending candidate (qLogEI with X_pending), from the store
    from aso_workflows.optimizers import ProposalContext
    from aso_workflows.structures import structure_fingerprint

    ranked = sorted(state.evaluations(), key=lambda e: e["objective"])
    evaluated = [(Structure.from_dict(e["structure"]), e["objective"]) for e in ranked]
    gp = state.config.section("gpbo")
    for pending in ([], [evaluated[-1][0].copy().perturb(0.05)]):
        ctx = ProposalContext(state, evaluated, pending, None, iteration=9, n_used=12, budget=13, q=1, seed=9)
        (prop,) = gp.propose(ctx)
        assert not violates_min_distance(prop.structure, table)
        assert structure_fingerprint(prop.structure) not in set(fingerprints(state))


# ---- DiffPy refinement -----------------------------------------------------------------------------
def _expanded_nio(nio: Structure, strain: float, jitter: float) -> Structure:
    """NiO with a, b, c scaled by 1 + strain and every atom displaced by up to ``jitter`` Å."""
    s = nio.copy()
    s.scale_lattice(nio.volume * (1 + strain) ** 3)
    sampler = PerturbationSampler(min_displacement=0.0, max_displacement=jitter, amplitude="atom", seed=4)
    return sampler.sample(s, 1)[0]


def test_pdffit2_refinement_recovers_the_lattice_parameter(nio):
    from aso_workflows.optimizers.diffpy_refine import PdfFitRefiner
    from aso_workflows.spectra.pdf import PDFSimulator

    sim = PDFSimulator()
    target = sim.simulate(nio).y
    start = _expanded_nio(nio, strain=0.015, jitter=0.03)  # a = 4.239 Å; jitter breaks the symmetry
    refiner = PdfFitRefiner(start, target, sim, refine_lattice=True)
    assert refiner.n_parameters == 3 + 3 * 8
    s, steps = start, 0
    for _ in range(12):
        new, calls = refiner.step(max_calls=10)
        steps += calls
        if new is None:
            break
        s = new
    a_true = nio.lattice.a
    assert abs(start.lattice.a - a_true) > 0.05
    assert np.allclose(s.lattice.abc, a_true, atol=0.005), s.lattice.abc
    assert np.allclose(s.lattice.angles, 90.0)
    before = np.mean((sim.simulate(start).y - target) ** 2)
    after = np.mean((sim.simulate(s).y - target) ** 2)
    assert after < before / 100 and steps == refiner.calls <= 40


def test_pdffit2_cannot_leave_a_symmetric_structure(nio):
    """Why DiffPyRefinement restarts from a perturbed structure: at the ideal rock-salt positions every
    derivative of G(r) with respect to a position vanishes, so the refinement cannot move."""
    from aso_workflows.optimizers.diffpy_refine import PdfFitRefiner
    from aso_workflows.spectra.pdf import PDFSimulator

    sim = PDFSimulator()
    target = sim.simulate(PerturbationSampler(max_displacement=0.2, seed=1).sample(nio, 1)[0]).y
    refiner = PdfFitRefiner(nio, target, sim, refine_lattice=False)
    new, calls = refiner.step(max_calls=6)
    assert new is None and calls == 7  # the first call also evaluates the start


def test_diffpy_campaign_refines_an_expanded_start(tmp_path, nio, one_torch_thread):
    from aso_workflows.optimizers.diffpy_refine import pdf_calculations

    start = tmp_path / "expanded.cif"
    s0 = nio.copy()
    s0.scale_lattice(nio.volume * 1.02**3)  # a = 4.260 Å
    s0.to(filename=str(start))
    state = run(write_nio_campaign(tmp_path, "diffpy", "diffpy", start=str(start)))
    assert state.doc["status"] == "completed" and state.n_used() == 12
    evals = state.evaluations()
    assert [e["kind"] for e in evals].count("diffpy") == 7
    target = Structure.from_dict(state.doc["target_structure"])
    best = state.best(1)[0]
    best_initial = min(e["objective"] for e in evals if e["kind"] in ("start", "initial"))
    assert best["kind"] == "diffpy" and best["objective"] < best_initial / 10
    assert np.allclose(Structure.from_dict(best["structure"]).lattice.abc, target.lattice.a, atol=0.01)
    table = state.min_distances
    proposals = {p["_id"]: p for p in state.proposals()}
    for e in (e for e in evals if e["kind"] == "diffpy"):
        assert not violates_min_distance(Structure.from_dict(e["structure"]), table)
        assert proposals[e["proposal_id"]]["predicted"]["diffpy"]["pdf_calculations"] >= 1
    charged = pdf_calculations(evals, proposals)
    assert charged[:5] == [1, 2, 3, 4, 5] and charged[-1] >= 12
    assert np.all(np.diff(charged) >= 1)


def test_diffpy_needs_a_pdf_target(tmp_path):
    path = write_nio_campaign(tmp_path, "no-pdf", "diffpy")
    doc = yaml.safe_load(path.read_text())
    doc["targets"] = [
        {"technique": "exafs", "structure": doc["targets"][0]["structure"], "settings": {"absorber": "Ni"}}
    ]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=r"optimizer 'diffpy' needs a pdf target, but the targets are"):
        load_config(path)


# ---- on the cluster --------------------------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.slow
def test_rmc_campaign_runs_as_slurm_jobs(slurm_testbed, slurm_queues, tmp_path):
    """Every propose job is its own Slurm job and process: the RMC chain comes from the store alone."""
    from aso_workflows.cluster.runner import ClusterCampaignRunner
    from aso_workflows.jobstore import shared_job_store
    from aso_workflows.testing.launchpad import mongomock_launchpad

    small = {"budget": 7, "initial_size": 2, "rmc": {"sigma": 0.08}}  # 3 initial, then 2 iterations of 2
    path = write_nio_campaign(tmp_path, "slurm-rmc", "rmc", **small)
    cfg = load_config(path)
    runner = ClusterCampaignRunner(
        launchpad=mongomock_launchpad(),
        launch_dir=tmp_path / "launches",
        queues=slurm_queues,
        job_store=shared_job_store(tmp_path / "jobstore"),
        timeout=600,
    )
    state, summary = runner.run(cfg)
    assert summary.workflow_state == "COMPLETED", summary.as_dict()
    assert state.n_used() == 7
    evals = state.evaluations()
    rmc_evals = [e for e in evals if e["kind"] == "rmc"]
    assert len(rmc_evals) == 4 and all(e["provenance"]["pdf"]["slurm_job_id"] for e in rmc_evals)
    assert any(r.name.endswith("/ propose") for r in summary.launches)
    # the same campaign run locally proposes exactly the same moves (replay is deterministic)
    local = run(write_nio_campaign(tmp_path, "local-rmc", "rmc", **small))
    assert fingerprints(local) == fingerprints(state)
