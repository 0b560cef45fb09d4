"""Known target structures for examples and benchmarks (success can be checked against them)."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure
from scipy.optimize import least_squares

__all__ = ["jahn_teller_distort", "amorphize", "cubic_perovskite", "octahedral_tilt"]


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

    def residual(x: np.ndarray) -> np.ndarray:
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


def cubic_perovskite(
    a_site: str = "Ca", b_site: str = "Ti", anion: str = "O", a: float = 3.84, supercell: int = 2
) -> Structure:
    """An ideal cubic ABX3 perovskite (B at the cell centre), as a ``supercell``³ supercell.

    A 2×2×2 supercell (40 atoms) is the smallest cell in which every Glazer tilt pattern fits.
    """
    s = Structure.from_spacegroup(
        "Pm-3m",
        np.eye(3) * a,
        [a_site, b_site, anion],
        [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.0]],
    )
    s.make_supercell([supercell] * 3)
    return s


def octahedral_tilt(
    structure: Structure,
    b_site: str = "Ti",
    anion: str = "O",
    angles: tuple[float, float, float] = (0.0, 0.0, 8.0),
    in_phase: tuple[bool, bool, bool] = (False, False, True),
) -> Structure:
    """Tilt the corner-sharing BX6 octahedra of a cubic perovskite supercell by a Glazer pattern.

    Each octahedron ``(i, j, k)`` (its B site in pseudo-cubic cell units) rotates about axis ``x_m`` by
    ``±angles[m]`` degrees; the sign alternates between neighbouring octahedra perpendicular to the axis
    (corner sharing forces it) and along the axis too unless ``in_phase[m]`` (Glazer ``+``, else ``−``).
    The default ``(0, 0, 8°)`` with ``(−, −, +)`` is ``a0a0c+``; ``angles=(6, 6, 8)`` with
    ``in_phase=(False, False, True)`` is the GdFeO3-type ``a−a−c+``. Every shared anion moves by the
    rotation of either of its two octahedra (the patterns make both agree); the lattice and the A and B
    sites stay fixed, so B–X bonds lengthen by ``1/cos θ`` (rigid-unit tilts without the cell contraction).

    Parameters
    ----------
    structure
        A cubic perovskite supercell with an even number of pseudo-cubic cells along each axis
        (e.g. :func:`cubic_perovskite`).
    """
    s = structure.copy()

    b_idx = [i for i, site in enumerate(s) if site.specie.symbol == b_site]
    if not b_idx:
        raise ValueError(f"no {b_site} sites in {s.formula}")
    # pseudo-cubic spacing = shortest B–B distance
    bb = s.distance_matrix[np.ix_(b_idx, b_idx)] + np.eye(len(b_idx)) * 1e9
    ap = float(bb.min())
    theta = np.radians(np.asarray(angles, dtype=float))
    cart = s.cart_coords.copy()
    new = cart.copy()
    for i, site in enumerate(s):
        if site.specie.symbol != anion:
            continue
        nbrs = [n for n in s.get_neighbors(site, 0.6 * ap) if n.specie.symbol == b_site]
        if len(nbrs) != 2:
            raise ValueError(
                f"{anion} site {i} has {len(nbrs)} {b_site} neighbours, expected 2 (cubic cell?)"
            )
        shifts = []
        for n in nbrs:
            ijk = np.floor(n.coords / ap + 1e-6).astype(int)  # image coordinates: parity is periodic
            omega = np.empty(3)
            for m in range(3):
                others = [ijk[k] for k in range(3) if k != m]
                sign = 1 - 2 * ((others[0] + others[1]) % 2)
                if not in_phase[m]:
                    sign *= 1 - 2 * (ijk[m] % 2)
                omega[m] = sign * theta[m]
            arm = cart[i] - n.coords
            shifts.append(np.cross(omega, arm))
        if not np.allclose(shifts[0], shifts[1], atol=1e-6):
            raise ValueError(
                "tilt pattern inconsistent with this cell: use an even supercell of a cubic cell"
            )
        new[i] = cart[i] + shifts[0]
    return Structure(s.lattice, s.species, new, coords_are_cartesian=True, to_unit_cell=True)
