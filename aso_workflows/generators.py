"""Known target structures for examples and benchmarks (success can be checked against them)."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure
from scipy.optimize import least_squares

__all__ = ["jahn_teller_distort", "amorphize"]


def jahn_teller_distort(
    structure: Structure,
    centre: str = "Ni",
    ligand: str = "O",
    long: float = 2.14,
    short: float = 1.91,
    seed: int = 0,
    cutoff: float = 2.4,
) -> Structure:
    """A Jahn–Teller-distorted copy: every ``centre``–``ligand`` octahedron gets 2 long and 4 short bonds.

    The elongation axis of each octahedron is one of its three O–Ni–O axes, chosen at random; the ligand
    positions are then fitted by least squares (lattice and other atoms fixed) so the bond lengths match the
    pattern as well as the shared ligands allow. For LiNiO2 this gives the Ni–O bond split around 2 Å the
    paper targets (reference pairs ~1.91/2.14 Å).
    """
    rng = np.random.default_rng(seed)
    s = structure.copy()
    centres = [i for i, site in enumerate(s) if site.specie.symbol == centre]
    ligands = [i for i, site in enumerate(s) if site.specie.symbol == ligand]
    bonds = []  # (centre index, ligand index, image, desired length)
    for c in centres:
        nbrs = [n for n in s.get_neighbors(s[c], cutoff) if n.specie.symbol == ligand]
        if len(nbrs) != 6:
            raise ValueError(
                f"site {c} ({centre}) has {len(nbrs)} {ligand} neighbours within {cutoff} Å, expected 6"
            )
        vecs = np.array([n.coords - s[c].coords for n in nbrs])
        axis = vecs[rng.integers(6)]
        along = np.abs(vecs @ axis) / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(axis)) > 0.8
        for n, is_long in zip(nbrs, along, strict=True):
            bonds.append((c, n.index, np.asarray(n.image), long if is_long else short))
    lat = s.lattice.matrix
    cart0 = s.cart_coords.copy()

    def residual(x):
        cart = cart0.copy()
        cart[ligands] = x.reshape(-1, 3)
        r = []
        for c, j, image, d in bonds:
            v = cart[j] + image @ lat - cart[c]
            r.append(np.linalg.norm(v) - d)
        # keep ligands near where they were (the fit is under-determined for shared ligands)
        r.extend(0.05 * (x - cart0[ligands].ravel()))
        return np.asarray(r)

    sol = least_squares(residual, cart0[ligands].ravel())
    new = cart0.copy()
    new[ligands] = sol.x.reshape(-1, 3)
    return Structure(s.lattice, s.species, new, coords_are_cartesian=True)


def amorphize(
    structure: Structure, displacement: float = 0.6, min_distance: float = 1.2, seed: int = 0
) -> Structure:
    """A disordered copy: random displacements (Gaussian, ``displacement`` Å RMS) kept above ``min_distance``.

    A crude stand-in for a melt-quenched amorphous target (e.g. amorphous carbon from diamond), adequate
    for a PDF whose sharp peaks beyond the first shell are washed out.
    """
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        cart = structure.cart_coords + rng.normal(0, displacement / np.sqrt(3), size=(len(structure), 3))
        s = Structure(structure.lattice, structure.species, cart, coords_are_cartesian=True)
        dm = s.distance_matrix + np.eye(len(s)) * 1e9
        if dm.min() >= min_distance:
            return s
    raise RuntimeError(f"could not place atoms ≥ {min_distance} Å apart after 1000 tries")
