"""The batched periodic neighbour list against pymatgen, and its gradients against finite differences."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from aso_workflows.errors import InputError
from aso_workflows.surrogate.neighbors import SkinNeighborList, periodic_neighbor_list, perpendicular_widths

# cutoffs are chosen off round numbers so that no distance sits exactly on the cutoff
CELLS = {
    "cubic": (Lattice.cubic(4.2), 6, 5.37),
    "small_triclinic": (Lattice.from_parameters(2.1, 2.5, 3.0, 50, 110, 65), 3, 5.93),
    # strongly skewed: b nearly parallel to a, c leaning over both (perpendicular widths ~0.5-1.5 Å)
    "skewed": (Lattice([[3.0, 0.0, 0.0], [2.85, 0.55, 0.0], [1.4, 0.3, 1.6]]), 2, 4.71),
    "one_atom": (Lattice.hexagonal(2.3, 3.1), 1, 5.11),
}


def _structure(lattice: Lattice, n: int, seed: int) -> Structure:
    rng = np.random.default_rng(seed)
    species = (["Ni", "O", "Li"] * n)[:n]
    return Structure(lattice, species, rng.random((n, 3)))


def _tensors(structures: list[Structure], dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.tensor(np.stack([s.cart_coords for s in structures]), dtype=dtype)
    lat = torch.tensor(np.stack([s.lattice.matrix for s in structures]), dtype=dtype)
    return pos, lat


def _pymatgen_edges(s: Structure, cutoff: float) -> Counter:
    i, j, images, d = s.get_neighbor_list(cutoff)
    return Counter((int(a), int(b), *map(int, np.round(m))) for a, b, m in zip(i, j, images, strict=True))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_matches_pymatgen(name):
    lattice, n, cutoff = CELLS[name]
    s = _structure(lattice, n, seed=1)
    pos, lat = _tensors([s])
    nl = periodic_neighbor_list(pos, lat, cutoff)
    # same (i, j, image) set: pymatgen's images are lattice translations of fractional coordinates
    # wrapped into the cell, ours of the Cartesian positions as given; the structure here is in the cell
    ours = Counter(
        (int(a), int(b), *map(int, np.round(m)))
        for a, b, m in zip(nl.src.tolist(), nl.dst.tolist(), nl.image.numpy(), strict=True)
    )
    assert ours == _pymatgen_edges(s, cutoff)
    # and the same sorted distances per atom
    i, _, _, d = s.get_neighbor_list(cutoff)
    for atom in range(n):
        np.testing.assert_allclose(
            np.sort(nl.dist[nl.src == atom].numpy()), np.sort(d[i == atom]), rtol=0, atol=1e-9
        )


def test_small_cells_need_several_images_and_self_images():
    lattice, n, cutoff = CELLS["small_triclinic"]
    assert float(perpendicular_widths(torch.tensor(lattice.matrix)[None]).min()) < cutoff / 2
    s = _structure(lattice, n, seed=2)
    nl = periodic_neighbor_list(*_tensors([s]), cutoff)
    assert nl.image.abs().max() >= 3
    self_edges = nl.src == nl.dst
    assert bool(self_edges.any())
    assert bool((nl.image[self_edges].abs().sum(-1) > 0).all())  # never i == j without a shift


def test_batch_of_different_cells_and_unwrapped_positions():
    """One call for cells of different shapes; atoms outside the cell give the same distances."""
    (la, na, _), (lb, _, _) = CELLS["cubic"], CELLS["skewed"]
    cutoff = 4.33
    a, b = _structure(la, na, seed=3), _structure(lb, na, seed=4)
    pos, lat = _tensors([a, b])
    shifted = pos.clone()
    shifted[1, 0] += 2 * lat[1, 0] - lat[1, 2]  # move one atom by a lattice vector combination
    nl = periodic_neighbor_list(shifted, lat, cutoff)
    for k, s in enumerate((a, b)):
        i, _, _, d = s.get_neighbor_list(cutoff)
        mine = nl.batch == k
        src = nl.src[mine] - k * na
        for atom in range(na):
            np.testing.assert_allclose(
                np.sort(nl.dist[mine][src == atom].numpy()), np.sort(d[i == atom]), atol=1e-9
            )


def test_translation_leaves_distances_unchanged():
    lattice, n, cutoff = CELLS["skewed"]
    pos, lat = _tensors([_structure(lattice, n, seed=5)])
    d0 = torch.sort(periodic_neighbor_list(pos, lat, cutoff).dist).values
    d1 = torch.sort(periodic_neighbor_list(pos + torch.tensor([0.37, -1.2, 2.9]), lat, cutoff).dist).values
    torch.testing.assert_close(d0, d1, rtol=0, atol=1e-9)


def test_gradients_match_finite_differences():
    """A smooth function of all neighbour distances, differentiated w.r.t. positions and lattice."""
    lattice, n, cutoff = CELLS["small_triclinic"]
    pos, lat = _tensors([_structure(lattice, n, seed=6), _structure(lattice, n, seed=7)])

    def energy(p, lt):
        d = periodic_neighbor_list(p, lt, cutoff).dist
        fc = 0.5 * (torch.cos(torch.pi * d / cutoff) + 1)  # smooth at the cutoff: the edge set may change
        return (fc * torch.exp(-d)).sum()

    assert torch.autograd.gradcheck(
        energy, (pos.requires_grad_(), lat.requires_grad_()), eps=1e-6, atol=1e-6, rtol=1e-4
    )


def test_distance_vector_gradients():
    """Each edge vector depends on positions and lattice exactly as r_j − r_i + m·L."""
    lattice, n, cutoff = CELLS["cubic"]
    pos, lat = _tensors([_structure(lattice, n, seed=8)])
    pos.requires_grad_()
    lat.requires_grad_()
    nl = periodic_neighbor_list(pos, lat, cutoff)
    e = int(torch.argmax(nl.image.abs().sum(-1)))  # an edge through a periodic image
    g_pos, g_lat = torch.autograd.grad(nl.dist[e], (pos, lat))
    u = (nl.vec[e] / nl.dist[e]).detach()
    i, j = int(nl.src[e]), int(nl.dst[e])
    expected_pos = torch.zeros_like(pos)
    expected_pos[0, j] += u
    expected_pos[0, i] -= u
    torch.testing.assert_close(g_pos, expected_pos)
    torch.testing.assert_close(g_lat[0], torch.outer(nl.image[e], u))


def _pairs(nl, n: int) -> Counter:
    """(structure, unordered pair, translation up to sign) of every edge."""
    out: Counter = Counter()
    for b, a, c, m in zip(
        nl.batch.tolist(), nl.src.tolist(), nl.dst.tolist(), nl.image.tolist(), strict=True
    ):
        i, j = a - b * n, c - b * n
        key = (i, j, *map(round, m)) if (i, *m) <= (j, *[-x for x in m]) else (j, i, *(-round(x) for x in m))
        out[(b, *key)] += 1
    return out


def test_half_list_holds_each_pair_once():
    lattice, n, cutoff = CELLS["small_triclinic"]  # self-images included
    pos, lat = _tensors([_structure(lattice, n, seed=9), _structure(lattice, n, seed=10)])
    full, half = periodic_neighbor_list(pos, lat, cutoff), periodic_neighbor_list(pos, lat, cutoff, half=True)
    assert 2 * len(half) == len(full)
    assert _pairs(half, n) == Counter({k: 1 for k in _pairs(full, n)})


def test_skin_list_is_exact_and_rescans_only_what_moved():
    """Kept edges give the distances of a fresh list; a structure is rescanned only after an atom moved
    more than half the skin, or after its cell was strained enough."""
    lattice, n, cutoff = CELLS["cubic"]
    pos, lat = _tensors([_structure(lattice, n, seed=11), _structure(lattice, n, seed=12)])
    skin = 0.4
    kept = SkinNeighborList(cutoff, skin)

    def within(p: torch.Tensor, lt: torch.Tensor) -> list[torch.Tensor]:
        d = kept.distances(p, lt)
        assert kept.pairs is not None
        return [torch.sort(d[(kept.pairs.batch == b) & (d < cutoff)]).values for b in range(2)]

    def fresh(p: torch.Tensor, lt: torch.Tensor) -> list[torch.Tensor]:
        nl = periodic_neighbor_list(p, lt, cutoff, half=True)
        return [torch.sort(nl.dist[nl.batch == b]).values for b in range(2)]

    within(pos, lat)
    assert kept.scans == 2
    rng = torch.Generator().manual_seed(0)
    step = torch.randn(pos.shape, generator=rng, dtype=pos.dtype)
    small = pos + 0.19 * step / step.norm(dim=-1, keepdim=True)  # every atom 0.19 Å < skin / 2
    for a, b in zip(within(small, lat), fresh(small, lat), strict=True):
        torch.testing.assert_close(a, b)
    assert kept.scans == 2
    moved = small.clone()
    moved[1, 0] += torch.tensor([0.3, 0.0, 0.0], dtype=pos.dtype)  # 0.3 Å from the scan: structure 1 only
    for a, b in zip(within(moved, lat), fresh(moved, lat), strict=True):
        torch.testing.assert_close(a, b)
    assert kept.scans == 3
    # expanding the cells moves no pair inwards: nothing rescanned; compressing them by 10 % (0.58 Å at
    # the reach) rescans both
    stretched, squeezed = (torch.eye(3, dtype=pos.dtype) * f for f in (1.03, 0.9))
    for deform, expected in ((stretched, 3), (squeezed, 5)):
        p, lt = moved @ deform, lat @ deform
        for a, b in zip(within(p, lt), fresh(p, lt), strict=True):
            torch.testing.assert_close(a, b)
        assert kept.scans == expected
    within(pos[:1], lat[:1])  # another batch: everything again
    assert kept.scans == 6


@pytest.mark.parametrize(
    "pos_shape, lat_shape, cutoff, field",
    [
        ((1, 4, 2), (1, 3, 3), 3.0, "positions"),
        ((2, 4, 3), (1, 3, 3), 3.0, "lattice"),
        ((1, 4, 3), (1, 3, 3), 0.0, "cutoff"),
    ],
)
def test_bad_input(pos_shape, lat_shape, cutoff, field):
    lat = torch.eye(3).expand(*lat_shape).clone() * 4
    with pytest.raises(InputError, match=field):
        periodic_neighbor_list(torch.zeros(pos_shape), lat, cutoff)


def test_flat_cell_is_rejected():
    with pytest.raises(InputError, match="zero volume"):
        periodic_neighbor_list(
            torch.zeros(1, 2, 3), torch.tensor([[[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]]]), 3.0
        )
