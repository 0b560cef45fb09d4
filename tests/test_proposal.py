"""Multi-start gradient proposals through a real differentiable stand-in for the surrogate.

The stand-in is a per-site, Gaussian-smeared, periodic radial distribution function computed in torch
(three smearing widths play the ensemble members: their mean and spread are ``mean`` and ``std``). Its
target is the same function of a known target structure, so the tests can check that the optimiser moves
structures towards the target.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from pymatgen.core import Lattice, Structure

import aso_workflows
from aso_workflows.errors import InputError
from aso_workflows.optimizers.aso.acquisition import LowerConfidenceBound
from aso_workflows.optimizers.aso.proposal import GradientProposer, Proposal, rms_displacement
from aso_workflows.optimizers.sampling import close_pairs, min_distance_matrix, violations
from aso_workflows.structures import min_distance_table, violates_min_distance

DATA = Path(aso_workflows.__file__).parent / "data"


class SiteRDF:
    """Differentiable periodic per-site RDF, ``[B, N·R]``; a stand-in for a surrogate's ``predict_torch``.

    ``g_i(r) = Σ_j,images f_c(d_ij) exp(−(r − d_ij)² / 2σ²)`` with a smooth cosine cutoff ``f_c``; the
    members differ by σ. Records the batch size of every call.
    """

    def __init__(self, n_atoms: int, r_min=1.5, r_max=4.5, n_points=31, sigmas=(0.1, 0.15, 0.2), cutoff=4.8):
        self.n = n_atoms
        self.r = torch.linspace(r_min, r_max, n_points)
        self.sigmas = torch.tensor(sigmas)
        self.cutoff = cutoff
        self.calls: list[tuple[int, bool]] = []  # (batch size, any constraint violation in the batch)
        self.dmin_to_watch: np.ndarray | None = None

    def __call__(self, pos: torch.Tensor, lat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        watch = self.dmin_to_watch
        self.calls.append(
            (pos.shape[0], bool(violations(pos, lat, watch).any()) if watch is not None else False)
        )
        # all pairs within the cutoff (found without gradient), distances recomputed with gradient
        b, i, j, image, _ = close_pairs(pos, lat, np.full((self.n, self.n), self.cutoff))
        vec = pos[b, j] - pos[b, i] + torch.einsum("kx,kxy->ky", image.to(pos.dtype), lat[b])
        d = torch.sqrt((vec**2).sum(-1).clamp(min=1e-12))
        fc = 0.5 * (torch.cos(torch.pi * (d / self.cutoff).clamp(max=1.0)) + 1)
        r, s = self.r.to(pos), self.sigmas.to(pos)
        g = torch.exp(-((r[None, :, None] - d[:, None, None]) ** 2) / (2 * s**2)) * fc[:, None, None]
        members = pos.new_zeros(pos.shape[0] * self.n, len(r), len(s)).index_add(0, b * self.n + i, g)
        members = members.reshape(pos.shape[0], self.n * len(r), len(s))
        return members.mean(-1), members.std(-1)


def _tensors(s: Structure) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(s.cart_coords)[None], torch.tensor(s.lattice.matrix)[None]


def _displaced(s: Structure, amplitude: float, rng: np.random.Generator) -> Structure:
    d = rng.normal(size=(len(s), 3))
    d *= amplitude / np.linalg.norm(d, axis=1, keepdims=True)
    return Structure(s.lattice, s.species, s.cart_coords + d, coords_are_cartesian=True)


def _rmsd(a: Structure, b: Structure) -> float:
    def t(s):
        return torch.tensor(s.frac_coords)[None], torch.tensor(s.lattice.matrix)[None]

    return float(rms_displacement(*t(a), *t(b))[0, 0])


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny problems: run them on one torch thread (fixture in conftest)."""


@pytest.fixture(scope="module")
def nio() -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(str(DATA / "NiO.cif"))


@pytest.fixture(scope="module")
def case(nio):
    """A distorted NiO target, a start 0.2 Å away from it per atom, and the stand-in's acquisition."""
    rng = np.random.default_rng(0)
    target = _displaced(nio, 0.2, rng)
    start = _displaced(target, 0.2, rng)
    rdf = SiteRDF(len(nio))
    mean, _ = rdf(*_tensors(target))
    acq = LowerConfidenceBound({"rdf": mean[0]}, lam=0.1)
    return target, start, acq


def _acq_of(s: Structure, acq: LowerConfidenceBound) -> float:
    mean, std = SiteRDF(len(s))(*_tensors(s))
    return float(acq({"rdf": mean}, {"rdf": std}))


def _proposer(**kw) -> GradientProposer:
    settings: dict[str, Any] = {"n_starts": 16, "steps": 50, "progress": False, "seed": 0}
    settings.update(kw)
    return GradientProposer(**settings)


def test_proposal_lowers_the_acquisition_and_approaches_the_target(nio, case):
    target, start, acq = case
    rdf = SiteRDF(len(nio))
    # copies of one start with Gaussian noise and large steps: the optimiser itself must work
    proposer = _proposer(starts="best", lr=1e-2)
    (prop,) = proposer.propose([start], {"rdf": rdf}, acq, min_distance_matrix(nio))
    assert isinstance(prop, Proposal) and not prop.fallback
    # all starts go through the predictor as one batch per step
    assert [n for n, _ in rdf.calls] == [16] * 51
    # the reported values are those of the returned structure
    assert prop.acquisition == pytest.approx(_acq_of(prop.structure, acq), abs=1e-4)
    assert prop.mean["rdf"].shape == (8 * 31,) and prop.std["rdf"].shape == (8 * 31,)
    assert prop.acquisition < _acq_of(start, acq) - 0.1
    assert _rmsd(prop.structure, target) < 0.5 * _rmsd(start, target)
    assert [x.specie.symbol for x in prop.structure] == [x.specie.symbol for x in nio]


def test_q_proposals_are_distinct_and_avoid_pending_and_evaluated(nio, case):
    target, start, acq = case
    dmin = min_distance_matrix(nio)
    threshold = 0.05
    proposer = _proposer(q=3, diversity_threshold=threshold)
    free = proposer.propose([start], {"rdf": SiteRDF(8)}, acq, dmin)
    assert len(free) == 3 and not any(p.fallback for p in free)
    assert [p.acquisition for p in free] == sorted(p.acquisition for p in free)
    pending = [free[0].structure]
    props = proposer.propose([start], {"rdf": SiteRDF(8)}, acq, dmin, pending=pending, evaluated=[start])
    assert len(props) == 3
    for a in range(3):
        assert _rmsd(props[a].structure, pending[0]) >= threshold
        assert _rmsd(props[a].structure, start) >= threshold
        for b in range(a):
            assert _rmsd(props[a].structure, props[b].structure) >= threshold
    # the pending structure was the best candidate: it is now replaced by a worse, distinct one
    assert props[0].acquisition >= free[0].acquisition


def test_reference_starts_are_the_evaluated_structures_then_fresh_perturbations(nio, case):
    """Reference defaults: every evaluated structure is a start, the rest are 0.1–1.0 Å perturbations of
    the start structure; lr 1e-3 keeps the evaluated starts within a ~0.1 Å trust region."""
    target, start, acq = case
    assert (GradientProposer().lr, GradientProposer().steps, GradientProposer().n_starts) == (1e-3, 100, 128)
    dmin = min_distance_matrix(nio)
    evaluated = [_displaced(start, 0.3, np.random.default_rng(k)) for k in range(5)]
    rdf = SiteRDF(8)
    proposer = _proposer(q=12, diversity_threshold=0.0, steps=40)
    props = proposer.propose(evaluated, {"rdf": rdf}, acq, dmin, reference=start)
    assert [n for n, _ in rdf.calls] == [16] * 41
    search = props[0].search
    assert (search["n_starts"], search["steps"], search["fresh_starts"], search["phase"]) == (
        16,
        40,
        11,
        "explore",
    )
    parents = {p.parent_index for p in props}
    assert -1 in parents and parents - {-1} <= set(range(5))
    for p in props:
        if p.parent_index >= 0:  # an evaluated start moved about lr per step and coordinate (Adam)
            origin = evaluated[p.parent_index]
            d = p.structure.frac_coords - origin.frac_coords
            d -= np.round(d)
            assert np.abs(d @ nio.lattice.matrix).max() <= 40 * 1e-3 * 1.25
        else:  # a fresh perturbation: every atom about its amplitude (0.1–1.0 Å) away from the start
            assert _rmsd(p.structure, start) > 0.05


def test_exploitation_search_is_larger_and_sized_down_on_cpu(nio, case):
    _, start, acq = case
    cpu = GradientProposer(device="cpu")
    assert cpu.search_size(False) == (128, 100)
    assert cpu.search_size(True) == (256, 200)  # the documented CPU size of the 1024 × 1000 search
    full = GradientProposer(device="cpu", cpu_exploit_scale=10)
    assert full.search_size(True) == (1024, 1000)  # the reference's: 8 × the starts, 10 × the steps
    assert GradientProposer(device="cpu", n_starts=8, steps=10).search_size(True) == (16, 20)
    assert GradientProposer(device="cpu", cpu_exploit_scale=1).search_size(True) == (128, 100)
    assert GradientProposer(device="cpu", exploit_n_starts=100, exploit_steps=50).search_size(True) == (
        100,
        50,
    )
    rdf = SiteRDF(8)
    proposer = _proposer(
        steps=3, exploit_n_starts=40, exploit_steps=5, cpu_exploit_scale=3, max_batch=16, device="cpu"
    )
    (p,) = proposer.propose([start], {"rdf": rdf}, acq, min_distance_matrix(nio), exploit=True)
    assert (p.search["phase"], p.search["n_starts"], p.search["steps"]) == ("exploit", 40, 5)
    assert [n for n, _ in rdf.calls] == [16] * 6 + [16] * 6 + [8] * 6  # in batches of max_batch


def test_batching_does_not_change_the_result(nio, case):
    _, start, acq = case
    dmin = min_distance_matrix(nio)
    one = _proposer(q=3, max_batch=16).propose([start], {"rdf": SiteRDF(8)}, acq, dmin, reference=start)
    split = _proposer(q=3, max_batch=5).propose([start], {"rdf": SiteRDF(8)}, acq, dmin, reference=start)
    assert [p.start_index for p in one] == [p.start_index for p in split]
    for a, b in zip(one, split, strict=True):
        assert a.acquisition == pytest.approx(b.acquisition, abs=1e-5)
        assert np.allclose(a.structure.cart_coords, b.structure.cart_coords, atol=1e-5)


def test_q1_returns_the_best_start(nio, case):
    _, start, acq = case
    dmin = min_distance_matrix(nio)
    (best,) = _proposer(q=1).propose([start], {"rdf": SiteRDF(8)}, acq, dmin)
    many = _proposer(q=4, diversity_threshold=0.0).propose([start], {"rdf": SiteRDF(8)}, acq, dmin)
    assert best.acquisition == pytest.approx(min(p.acquisition for p in many))


def test_constraint_violators_are_never_returned(nio):
    # a target that wants Ni–O at ~1.5 Å pulls atoms together; without a penalty the optimiser does so
    squeezed = Structure(Lattice(nio.lattice.matrix * 0.72), nio.species, nio.frac_coords)
    overrides = {"Ni-O": 1.9, "Ni-Ni": 2.6, "O-O": 2.6}
    table = min_distance_table(["Ni", "O"], overrides)
    dmin = min_distance_matrix(nio, overrides)
    mean, _ = SiteRDF(8)(*_tensors(squeezed))
    acq = LowerConfidenceBound({"rdf": mean[0]}, lam=0.0)
    rdf = SiteRDF(8)
    rdf.dmin_to_watch = dmin
    starts = [_displaced(nio, 0.05, np.random.default_rng(k)) for k in range(4)]
    props = _proposer(q=3, penalty_weight=0.0, lr=0.05).propose(starts, {"rdf": rdf}, acq, dmin)
    assert any(bad for _, bad in rdf.calls)  # the optimiser did visit violating structures
    assert len(props) == 3
    for p in props:
        assert not violates_min_distance(p.structure, table)


def test_near_convergence_the_batch_is_completed_near_the_best_or_shrinks(nio, case):
    """Fallback rules (optimizers/aso/fallback.py): every start ends near an evaluated structure."""
    target, start, acq = case
    dmin = min_distance_matrix(nio)
    rng = np.random.default_rng(3)
    best = _displaced(target, 0.02, rng)  # an evaluated structure close to the minimum
    others = [_displaced(target, 0.06, rng), _displaced(target, 0.1, rng)]
    evaluated = [best, *others]
    best_acq = _acq_of(best, acq)
    # few small steps from the evaluated structures: nothing ends 0.05 Å away from them
    proposer = _proposer(starts="best", steps=10, lr=1e-3, start_noise=0.0, n_starts=3, q=3)
    props = proposer.propose(evaluated, {"rdf": SiteRDF(8)}, acq, dmin, evaluated=evaluated)
    assert 1 <= len(props) <= 3
    for p in props:
        assert not bool(violations(*_tensors(p.structure), dmin)[0])
        assert min(_rmsd(p.structure, e) for e in evaluated) >= proposer.min_separation
        assert p.acquisition == pytest.approx(_acq_of(p.structure, acq), abs=1e-4)
        summary = p.search["fallback"]
        assert len(props) + summary["shrunk"] == 3
    near = [p for p in props if not p.fallback]
    assert near and all(p.search.get("near_known") for p in near)  # the optimised refinements of the best
    assert all(p.acquisition < best_acq for p in near)
    # local perturbations are sized to the best's neighbourhood (nearest other evaluated structure)
    gap = min(_rmsd(best, o) for o in others)
    for p in props:
        if p.fallback:
            assert p.search["fallback_scale"] <= gap + 1e-9
            assert _rmsd(p.structure, best) <= gap * 1.01


def test_local_fallback_shrinks_the_batch_rather_than_propose_a_bad_structure(nio, case):
    target, _, acq = case
    dmin = min_distance_matrix(nio)
    start = _displaced(target, 0.01, np.random.default_rng(4))  # next to the minimum
    # no steps: every candidate is an evaluated structure; perturbations are allowed up to 0.3 Å, but
    # none may be predicted worse than 1.01 × the best: at most the one forced candidate remains
    proposer = _proposer(
        starts="best", steps=0, start_noise=0.0, q=3, fallback_max_displacement=0.3, fallback_max_ratio=1.01
    )
    props = proposer.propose([start], {"rdf": SiteRDF(8)}, acq, dmin, evaluated=[start])
    assert len(props) <= 1
    for p in props:
        assert p.fallback and p.search["fallback"]["shrunk"] == 3 - len(props)
    # with a tolerant ratio the batch is filled with local perturbations of up to 0.3 Å
    tolerant = _proposer(
        starts="best", steps=0, start_noise=0.0, q=2, fallback_max_displacement=0.3, fallback_max_ratio=1e6
    )
    props = tolerant.propose([start], {"rdf": SiteRDF(8)}, acq, dmin, evaluated=[start])
    assert len(props) == 2 and all(p.fallback for p in props)
    for p in props:
        assert tolerant.min_separation <= _rmsd(p.structure, start) <= 0.3 * 1.01
        assert p.acquisition == pytest.approx(_acq_of(p.structure, acq), abs=1e-4)


def test_lattice_optimisation_follows_a_strained_target(nio):
    target = Structure(Lattice(nio.lattice.matrix * 1.03), nio.species, nio.frac_coords)
    start = _displaced(nio, 0.05, np.random.default_rng(1))
    mean, _ = SiteRDF(8)(*_tensors(target))
    acq = LowerConfidenceBound({"rdf": mean[0]}, lam=0.1)
    proposer = _proposer(optimise_lattice=True, max_strain=0.05, start_noise=0.05)
    (prop,) = proposer.propose([start], {"rdf": SiteRDF(8)}, acq, min_distance_matrix(nio))
    a0, a_target = nio.lattice.a, target.lattice.a
    abc = np.array(prop.structure.lattice.abc)
    assert np.all(np.abs(abc - a_target) < 0.5 * (a_target - a0))
    assert np.all(abc <= a0 * 1.05 + 1e-4)


def test_rms_displacement_ignores_translation_and_periodic_wrapping(nio):
    frac = torch.tensor(nio.frac_coords)[None]
    lat = torch.tensor(nio.lattice.matrix)[None]
    shifted = frac + torch.tensor([0.5, -0.37, 0.99])  # a global translation, wrapping across the cell
    assert float(rms_displacement(frac, lat, shifted, lat)[0, 0]) < 1e-9
    moved = frac.clone()
    moved[0, 0, 0] += 0.1 / nio.lattice.a  # one atom by 0.1 Å
    d = float(rms_displacement(frac, lat, moved, lat)[0, 0])
    expected = 0.1 * np.sqrt((1 - 1 / 8) ** 2 / 8 + 7 * (1 / 8) ** 2 / 8)  # after removing the mean shift
    assert d == pytest.approx(expected, rel=1e-6)


def test_inputs_are_checked(nio, case):
    _, start, acq = case
    dmin = min_distance_matrix(nio)
    other = Structure(nio.lattice, list(reversed(nio.species)), nio.frac_coords)
    with pytest.raises(InputError, match=r"proposal.pending\[0\]: species/site order"):
        _proposer(steps=1).propose([start], {"rdf": SiteRDF(8)}, acq, dmin, pending=[other])
    with pytest.raises(InputError, match="dmin_matrix"):
        _proposer(steps=1).propose([start], {"rdf": SiteRDF(8)}, acq, dmin[:4, :4])
    with pytest.raises(ValidationError, match="n_starts"):
        GradientProposer(n_starts=0)
    with pytest.raises(ValidationError, match="device"):
        GradientProposer(device="gpu")


def test_settings_validate_through_pydantic_like_the_campaign_config():
    adapter = TypeAdapter(GradientProposer)
    p = adapter.validate_python({"n_starts": 8, "q": 2, "optimise_lattice": True})
    assert (p.n_starts, p.q, p.optimise_lattice, p.steps) == (8, 2, True, 100)
    with pytest.raises(ValueError, match=r"lr\n  Input should be greater than 0"):
        adapter.validate_python({"lr": -1.0})
    with pytest.raises(ValueError, match="fallback_min_displacement"):
        adapter.validate_python({"fallback_min_displacement": 0.6})


def test_search_steps_read_nothing_back_but_the_list_checks(nio, case, monkeypatch):
    """Ready for a GPU: a search step reads nothing from the device (each read waits for it) except one
    flag per kept neighbour list (whether to rescan) and, every few steps, the progress numbers. Counted
    on the CPU: every Tensor → Python conversion made by the package's code during a search with the
    real GNN ensemble as predictor, for two search lengths."""
    import sys

    from aso_workflows.optimizers.aso import proposal
    from aso_workflows.surrogate.ensemble import EnsembleSurrogate
    from aso_workflows.surrogate.settings import SurrogateSettings

    _, start, _ = case
    species = [x.specie.symbol for x in nio]
    sur = EnsembleSurrogate(
        species,
        31,
        "node",
        settings=SurrogateSettings(n_models=2, hidden=8, n_layers=1, n_rbf=16, cutoff=3.5, progress=False),
    )
    with torch.no_grad():
        target, _ = sur.predict_torch(*(t.float() for t in _tensors(start)))
    acq = LowerConfidenceBound({"gnn": target[0]}, lam=0.1)
    package = str(Path(proposal.__file__).parents[2])
    reads = []

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(package):
                reads.append(name)
            return original(self, *args, **kwargs)

        return wrapper

    for name in ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    counts = {}
    for steps in (2, 12):
        reads.clear()
        _proposer(n_starts=4, steps=steps).propose(
            [start], {"gnn": sur.predict_torch}, acq, min_distance_matrix(nio)
        )
        counts[steps] = len(reads)
    monkeypatch.undo()
    # ten more steps: two list checks per step (the surrogate's and the minimum-distance contacts') and
    # one more progress read (best value and valid count)
    assert counts[12] - counts[2] <= 2 * 10 + 2, counts
