"""Perturbation sampler and the periodic minimum-distance constraint (numpy and torch)."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from pymatgen.core import Lattice, Structure

import aso_workflows
from aso_workflows.errors import InputError
from aso_workflows.optimizers.sampling import (
    PerturbationSampler,
    min_distance_matrix,
    min_distance_penalty,
    violations,
)
from aso_workflows.structures import min_distance_table, violates_min_distance

DATA = Path(aso_workflows.__file__).parent / "data"


def _read(name: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(str(DATA / name))


@pytest.fixture(scope="module")
def nio() -> Structure:
    return _read("NiO.cif")


@pytest.fixture(scope="module")
def linio2() -> Structure:
    return _read("LiNiO2.cif")


def _displacements(a: Structure, b: Structure) -> np.ndarray:
    """Per-atom displacement lengths (Å) from a to b, nearest image (both share a's lattice)."""
    d = b.frac_coords - a.frac_coords
    d -= np.round(d)
    return np.linalg.norm(d @ a.lattice.matrix, axis=1)


def _table(s: Structure, overrides=None, scale=0.7):
    return min_distance_table([site.specie.symbol for site in s], overrides, scale)


def test_displacements_lie_within_bounds(nio):
    sampler = PerturbationSampler(min_displacement=0.1, max_displacement=1.0, seed=3)
    out = sampler.sample(nio, 20)
    assert len(out) == 20
    d = np.concatenate([_displacements(nio, s) for s in out])
    assert d.min() >= 0.1 - 1e-9
    assert d.max() <= 1.0 + 1e-9
    assert d.max() - d.min() > 0.5  # lengths really spread over the range
    for s in out:
        assert [x.specie.symbol for x in s] == [x.specie.symbol for x in nio]
        assert np.allclose(s.lattice.matrix, nio.lattice.matrix)


def test_one_amplitude_per_structure(nio):
    sampler = PerturbationSampler(min_displacement=0.2, max_displacement=0.9, seed=4)
    out, reports = sampler.sample_with_report(nio, 12)
    amplitudes = []
    for s, r in zip(out, reports, strict=True):
        d = _displacements(nio, s)
        assert np.allclose(d, r.amplitude)  # every atom moved by the structure's amplitude
        amplitudes.append(r.amplitude)
    assert min(amplitudes) >= 0.2 and max(amplitudes) <= 0.9
    assert max(amplitudes) - min(amplitudes) > 0.3  # structures spread over the range
    # the per-atom option draws a length per atom
    per_atom = PerturbationSampler(min_displacement=0.2, max_displacement=0.9, amplitude="atom", seed=4)
    d = _displacements(nio, per_atom.sample(nio, 1)[0])
    assert d.max() - d.min() > 0.1


def test_200_atom_oxide_supercell_is_sampled_at_the_reference_range(nio):
    """NiO 3×3×3 (216 atoms) at 0.1–1.0 Å: whole-structure rejection never accepted such a draw (issue 12);
    re-drawing the violating atoms one at a time gives valid structures at the drawn amplitude."""
    big = nio * (3, 3, 3)
    sampler = PerturbationSampler(min_displacement=0.8, max_displacement=1.0, seed=0)
    out, reports = sampler.sample_with_report(big, 2)
    dmin = sampler.dmin_matrix(big)
    pos = torch.tensor(np.stack([s.cart_coords for s in out]))
    lat = torch.tensor(np.stack([s.lattice.matrix for s in out]))
    assert not violations(pos, lat, dmin).any()
    for s, r in zip(out, reports, strict=True):
        assert np.allclose(_displacements(big, s), r.amplitude)
        # the first draw broke many pairs (whole-structure rejection would have thrown it away)
        assert r.violating_atoms > 10
        assert 0 < r.redrawn_atoms <= r.violating_atoms * 4
        assert r.restarts == 0


def test_default_distances_are_capped_by_the_structure_itself():
    """Metallic radii put Cs–Cs at 3.64 Å; a start with Cs–Cs at 3.50 Å must still be perturbable."""
    s = Structure(Lattice.cubic(3.5), ["Cs", "Cl"], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]) * (2, 2, 2)
    plain = min_distance_table(["Cs", "Cl"])
    assert plain[("Cs", "Cs")] > 3.5  # the uncapped table rejects the start itself
    table = min_distance_table(["Cs", "Cl"], reference=s)
    assert table[("Cs", "Cs")] == pytest.approx(0.9 * 3.5)
    assert table[("Cl", "Cs")] <= plain[("Cl", "Cs")]
    assert min_distance_table(["Cs", "Cl"], {"Cs-Cs": 3.6}, reference=s)[("Cs", "Cs")] == 3.6  # explicit
    out = PerturbationSampler(min_displacement=0.5, max_displacement=0.6, seed=1).sample(s, 3)
    assert len(out) == 3
    assert not any(violates_min_distance(x, table) for x in out)


def test_samples_respect_min_distances(nio):
    overrides = {"Ni-O": 1.85}
    table = _table(nio, overrides)
    strict = PerturbationSampler(max_displacement=0.6, min_distances=overrides, seed=1)
    for s in strict.sample(nio, 15):
        assert not violates_min_distance(s, table)
    # the constraint is binding: without it, the same kind of perturbation often breaks it
    loose = PerturbationSampler(max_displacement=0.6, min_distance_scale=0.01, seed=1)
    assert sum(violates_min_distance(s, table) for s in loose.sample(nio, 15)) > 0


def test_sampling_is_seed_reproducible(nio):
    a = PerturbationSampler(seed=7).sample(nio, 6)
    b = PerturbationSampler(seed=7).sample(nio, 6)
    c = PerturbationSampler(seed=8).sample(nio, 6)
    assert all(np.array_equal(x.cart_coords, y.cart_coords) for x, y in zip(a, b, strict=True))
    assert not np.allclose(a[0].cart_coords, c[0].cart_coords)
    # the first k of a longer draw are the same structures; a per-call seed overrides the sampler's
    first = PerturbationSampler(seed=7).sample(nio, 3)
    assert all(np.array_equal(x.cart_coords, y.cart_coords) for x, y in zip(first, a[:3], strict=True))
    again = PerturbationSampler(seed=0).sample(nio, 2, seed=7)
    assert np.array_equal(again[1].cart_coords, a[1].cart_coords)


def test_lattice_perturbation_stays_in_bounds_and_orientation(linio2):
    sampler = PerturbationSampler(perturb_lattice=True, max_strain=0.03, max_angle_change=2.0, seed=2)
    abc0, ang0 = np.array(linio2.lattice.abc), np.array(linio2.lattice.angles)
    changed = 0
    for s in sampler.sample(linio2, 10):
        abc, ang = np.array(s.lattice.abc), np.array(s.lattice.angles)
        assert np.all(np.abs(abc / abc0 - 1) <= 0.03 + 1e-9)
        assert np.all(np.abs(ang - ang0) <= 2.0 + 1e-9)
        changed += not np.allclose(abc, abc0)
        # same orientation: each lattice vector turns by less than a few degrees
        cos = np.sum(s.lattice.matrix * linio2.lattice.matrix, 1) / (abc * abc0)
        assert np.all(cos > np.cos(np.radians(5)))
    assert changed == 10


def test_exhausted_tries_name_the_blocking_pair(nio):
    sampler = PerturbationSampler(
        min_displacement=0.9, max_displacement=1.0, min_distances={"Ni-O": 2.3}, max_tries=5
    )
    with pytest.raises(InputError, match=r"Ni-O minimum distance 2\.30 Å.*unperturbed structure already"):
        sampler.sample(nio, 2)


def test_bad_settings_name_the_field():
    with pytest.raises(ValidationError, match=r"min_displacement \(2.0\) must not exceed max_displacement"):
        PerturbationSampler(min_displacement=2.0, max_displacement=1.0)
    with pytest.raises(ValidationError, match="max_tries"):
        PerturbationSampler(max_tries=0)
    with pytest.raises(ValidationError, match="amplitude"):
        PerturbationSampler(amplitude="site")  # type: ignore[arg-type]  # a bad value on purpose


def _brute_force_violation(pos: np.ndarray, lat: np.ndarray, dmin: np.ndarray) -> bool:
    shifts = np.array(list(itertools.product(range(-5, 6), repeat=3)))
    images = shifts @ lat
    for i, j in itertools.product(range(len(pos)), repeat=2):
        d = np.linalg.norm(pos[j] - pos[i] + images, axis=1)
        if i == j:
            d = d[np.any(shifts != 0, axis=1)]
        if d.min() < dmin[i, j]:
            return True
    return False


def test_batch_violations_match_brute_force_on_skewed_cells():
    rng = np.random.default_rng(0)
    pos: list[np.ndarray] = []
    lat: list[np.ndarray] = []
    expected: list[bool] = []
    n = 3
    dmin = rng.uniform(0.8, 2.5, (n, n))
    dmin = (dmin + dmin.T) / 2
    while len(pos) < 60:
        m = np.diag(rng.uniform(2.0, 5.0, 3)) + rng.normal(scale=1.0, size=(3, 3))
        if abs(np.linalg.det(m)) < 4:
            continue
        p = rng.uniform(-1, 2, (n, 3)) @ m  # positions outside the cell too
        pos.append(p)
        lat.append(m)
        expected.append(_brute_force_violation(p, m, dmin))
    got = violations(torch.tensor(np.array(pos)), torch.tensor(np.array(lat)), dmin).numpy()
    assert 5 < sum(expected) < 55  # both outcomes are represented
    assert got.tolist() == expected


def test_batch_violations_agree_with_structures_module(linio2):
    cands = PerturbationSampler(max_displacement=1.0, min_distance_scale=0.01, seed=5).sample(linio2, 40)
    table = _table(linio2)
    pos = torch.tensor(np.stack([c.cart_coords for c in cands]))
    lat = torch.tensor(np.stack([c.lattice.matrix for c in cands]))
    got = violations(pos, lat, min_distance_matrix(linio2)).numpy()
    expected = np.array([violates_min_distance(c, table) for c in cands])
    assert 0 < expected.sum() < len(cands)
    assert np.array_equal(got, expected)


def _two_atoms(x0: float, x1: float, a: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.tensor([[[x0, 1.0, 1.0], [x1, 1.0, 1.0]]], dtype=torch.float64, requires_grad=True)
    lat = torch.tensor(np.eye(3)[None] * a, dtype=torch.float64, requires_grad=True)
    return pos, lat


def test_penalty_is_zero_for_a_valid_structure(nio):
    dmin = min_distance_matrix(nio)
    pos = torch.tensor(nio.cart_coords)[None]
    lat = torch.tensor(nio.lattice.matrix)[None]
    assert float(min_distance_penalty(pos, lat, dmin)[0]) == 0.0
    assert not bool(violations(pos, lat, dmin)[0])


def test_penalty_pushes_apart_a_pair_too_close_across_the_boundary():
    dmin = np.full((2, 2), 1.0)
    pos, lat = _two_atoms(0.1, 4.9)  # 4.8 Å apart in the cell, 0.2 Å through the periodic boundary
    pen = min_distance_penalty(pos, lat, dmin)
    assert bool(violations(pos, lat, dmin)[0])
    assert float(pen[0].detach()) == pytest.approx((1.0 - 0.2) ** 2)
    pen.sum().backward()
    assert pos.grad is not None and lat.grad is not None
    # descending the penalty moves atom 0 towards +x and atom 1 towards −x: apart through the boundary
    assert -pos.grad[0, 0, 0] > 0 and -pos.grad[0, 1, 0] < 0
    assert torch.allclose(pos.grad[0, :, 1:], torch.zeros(2, 2, dtype=torch.float64))
    # and a longer a-axis helps too
    assert -lat.grad[0, 0, 0] > 0
    # after a few gradient steps the pair is valid
    p = pos.detach().clone()
    for _ in range(200):
        p.requires_grad_(True)
        g = torch.autograd.grad(min_distance_penalty(p, lat.detach(), dmin).sum(), p)[0]
        p = (p - 0.5 * g).detach()
    assert not bool(violations(p, lat.detach(), dmin)[0])


def test_atom_too_close_to_its_own_image_is_a_violation():
    dmin = np.full((1, 1), 1.5)
    pos = torch.zeros(1, 1, 3, dtype=torch.float64)
    lat = torch.tensor(Lattice.from_parameters(1.2, 3, 3, 90, 90, 90).matrix)[None]
    assert bool(violations(pos, lat, dmin)[0])
    assert float(min_distance_penalty(pos, lat, dmin)[0]) == pytest.approx((1.5 - 1.2) ** 2)


def test_penalty_from_a_kept_pair_list_equals_a_fresh_scan():
    from aso_workflows.surrogate.neighbors import SkinNeighborList

    a = 3.1
    lat = torch.tensor(np.eye(3)[None] * a, dtype=torch.float64).expand(2, 3, 3).clone()
    rng = np.random.default_rng(3)
    pos = torch.tensor(rng.uniform(0, a, size=(2, 5, 3)))
    dmin = np.full((5, 5), 1.6)
    dmin[0, 1] = dmin[1, 0] = 1.9
    contacts = SkinNeighborList(1.9, 0.5)
    for step in range(3):
        p = (pos + 0.05 * step).requires_grad_()
        fresh = min_distance_penalty(p, lat, dmin)
        kept = min_distance_penalty(p, lat, dmin, contacts)
        assert float(fresh.detach().sum()) > 0
        torch.testing.assert_close(kept, fresh)
        torch.testing.assert_close(
            torch.autograd.grad(kept.sum(), p)[0], torch.autograd.grad(fresh.sum(), p)[0]
        )
    assert contacts.scans == 2
