"""Symmetry constraints: the free parameters PDFgui would refine, as a linear (differentiable) map."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from aso_workflows.errors import InputError
from aso_workflows.symmetry import symmetry_constraints


def ideal_lamno3() -> Structure:
    """LaMnO3 in its Pbnm cell (PDFgui's refined a, b, c) with ideal, untilted perovskite positions."""
    frac = [
        *([0, 0, 0.25], [0.5, 0.5, 0.75], [0, 0, 0.75], [0.5, 0.5, 0.25]),
        *([0, 0.5, 0], [0.5, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5]),
        *([0, 0.5, 0.25], [0.5, 0, 0.75], [0, 0.5, 0.75], [0.5, 0, 0.25]),
        *([0.75, 0.25, 0], [0.25, 0.25, 0], [0.25, 0.75, 0.5], [0.75, 0.75, 0.5]),
        *([0.25, 0.75, 0], [0.75, 0.75, 0], [0.75, 0.25, 0.5], [0.25, 0.25, 0.5]),
    ]
    return Structure(Lattice.orthorhombic(5.5411, 5.7467, 7.6840), ["La"] * 4 + ["Mn"] * 4 + ["O"] * 12, frac)


def wurtzite() -> Structure:
    frac = [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.375], [2 / 3, 1 / 3, 0.875]]
    return Structure(Lattice.hexagonal(4.3, 7.01), ["Cd", "Cd", "Se", "Se"], frac)


def test_the_tilted_perovskite_has_pdfguis_seven_free_coordinates_from_ideal_positions():
    start = ideal_lamno3()
    own = symmetry_constraints(start)
    assert own.spacegroup != "Pbnm" and own.n_free < 7  # the ideal structure has more symmetry
    c = symmetry_constraints(start, "Pbnm")
    assert c.spacegroup == "Pbnm" and c.number == 62
    assert c.names == ["x(La1)", "y(La1)", "x(O1)", "y(O1)", "x(O2)", "y(O2)", "z(O2)"]
    assert [len(o) for o in c.orbits] == [4, 4, 4, 8]
    assert c.length_groups == [[0], [1], [2]] and c.angle_groups == []
    # PDFgui's refined LaMnO3 (10 K) is a point of this map: the map reproduces it exactly
    refined = {"x(La1)": -0.0084, "y(La1)": 0.0489, "x(O1)": 0.0743, "y(O1)": -0.0124}
    refined |= {"x(O2)": -0.0247, "y(O2)": 0.0556, "z(O2)": 0.0392}
    p = np.array([refined[n] for n in c.names])
    frac = c.positions(p)
    assert np.allclose(c.parameters(frac), p, atol=1e-12)
    distorted = Structure(start.lattice, start.species, frac)
    assert symmetry_constraints(distorted).spacegroup == "Pnma"  # Pbnm in its standard setting
    mn_o = sorted(distorted.get_distance(4, j) for j in range(8, 20) if distorted.get_distance(4, j) < 2.5)
    assert len(mn_o) == 6 and mn_o[-1] - mn_o[0] > 0.2  # the Jahn–Teller split is reachable


def test_polar_axis_fixes_one_coordinate_and_cells_tie_their_lengths():
    c = symmetry_constraints(wurtzite())
    assert c.spacegroup == "P6_3mc" and c.names == ["z(Se1)"]  # Cd z fixes the origin, as in PDFgui
    assert c.length_groups == [[0, 1], [2]] and c.angle_groups == []
    basis, transforms = c.adp_basis(0)
    assert basis.shape == (6, 2)  # U11 = U22 = 2 U12, U33: the hexagonal site symmetry
    assert np.allclose(basis[:, 0], [1, 1, 0, 0.5, 0, 0]) and np.allclose(basis[:, 1], [0, 0, 1, 0, 0, 0])
    assert len(transforms) == 2
    fcc = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.52), ["Ni"], [[0, 0, 0]]) * (2, 2, 2)
    f = symmetry_constraints(fcc)
    assert f.n_free == 0 and f.length_groups == [[0, 1, 2]] and len(f.orbits) == 1


def test_projector_keeps_positions_in_the_group_and_passes_gradients():
    torch = pytest.importorskip("torch")
    start = ideal_lamno3()
    c = symmetry_constraints(start, "Pbnm")
    proj = c.torch_projector(np.asarray(start.lattice.matrix))
    pos0 = torch.tensor(start.cart_coords)[None]
    lat = torch.tensor(start.lattice.matrix)[None]
    disp = 0.05 * torch.randn(pos0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    disp.requires_grad_(True)
    pos = proj.positions(pos0 + disp, lat)
    moved = Structure(start.lattice, start.species, pos[0].detach().numpy(), coords_are_cartesian=True)
    assert c.deviation(moved) < 1e-9  # still Pbnm
    assert (
        c.deviation(
            Structure(
                start.lattice, start.species, (pos0 + disp)[0].detach().numpy(), coords_are_cartesian=True
            )
        )
        > 0.01
    )
    (pos**2).sum().backward()
    assert disp.grad is not None and float(disp.grad.abs().sum()) > 0


def test_a_group_that_is_not_a_symmetry_of_the_start_is_refused():
    with pytest.raises(InputError, match="symmetry.*maps the start"):
        symmetry_constraints(wurtzite(), "Pm-3m")
    with pytest.raises(InputError, match="unknown space group"):
        symmetry_constraints(wurtzite(), "Xyz")


def _distorted(start: Structure, c) -> Structure:
    p = np.array([-0.0084, 0.0489, 0.0743, -0.0124, -0.0247, 0.0556, 0.0392])
    return Structure(start.lattice, start.species, c.positions(p))


def test_sampler_and_gradient_proposals_stay_in_the_group_and_keep_restraints(one_torch_thread):
    """From ideal LaMnO3 in Pbnm: random draws and proposals move only the seven free coordinates."""
    import torch
    from test_proposal import SiteRDF

    from aso_workflows.optimizers.aso.acquisition import LowerConfidenceBound
    from aso_workflows.optimizers.aso.proposal import GradientProposer
    from aso_workflows.optimizers.constraint import SearchConstraint
    from aso_workflows.optimizers.sampling import PerturbationSampler, min_distance_matrix
    from aso_workflows.restraints import Restraints

    start = ideal_lamno3()
    c = symmetry_constraints(start, "Pbnm")
    restraints = Restraints(bonds={"Mn-O": (1.80, 2.35)}).compile(start)
    constraint = SearchConstraint(c, restraints)
    dmin = min_distance_matrix(start, {"La-O": 2.2, "Mn-O": 1.7, "O-O": 2.3, "La-Mn": 2.8})
    sampler = PerturbationSampler(min_displacement=0.05, max_displacement=0.3, seed=1, constraint=constraint)
    draws = sampler.sample(start, 6, dmin_matrix=dmin)
    assert all(c.deviation(s) < 1e-9 and restraints.ok(s) for s in draws)
    assert min(float(np.abs(c.parameters(s.frac_coords)).max()) for s in draws) > 0  # they moved
    target = _distorted(start, c)
    rdf = SiteRDF(len(start))
    mean, _ = rdf(torch.tensor(target.cart_coords)[None], torch.tensor(target.lattice.matrix)[None])
    acq = LowerConfidenceBound({"rdf": mean[0]}, lam=0.0)
    proposer = GradientProposer(
        n_starts=8,
        steps=30,
        lr=0.01,
        q=2,
        progress=False,
        device="cpu",
        dtype="float64",
        constraint=constraint,
    )
    props = proposer.propose(draws, {"rdf": rdf}, acq, dmin, reference=start, sampler=sampler)
    assert len(props) == 2 and not any(p.fallback for p in props)
    for p in props:
        assert c.deviation(p.structure) < 1e-6 and restraints.ok(p.structure)
    best_start = min(
        float(
            acq(
                *(lambda m: ({"rdf": m[0]}, {"rdf": m[1]}))(
                    rdf(torch.tensor(s.cart_coords)[None], torch.tensor(s.lattice.matrix)[None])
                )
            )
        )
        for s in draws
    )
    assert props[0].acquisition < best_start
