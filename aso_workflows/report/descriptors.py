"""Structure descriptors people compare: neighbour distances, first-shell cutoffs and bond angles."""

from __future__ import annotations

import numpy as np
from pymatgen.core import PeriodicSite, Structure

__all__ = ["neighbour_distances", "first_shell_cutoffs", "bond_angles", "min_distance"]


def _symbol(site: PeriodicSite) -> str:
    return getattr(site.specie, "symbol", str(site.specie))


def neighbour_distances(structure: Structure, rmax: float = 4.0) -> np.ndarray:
    """All interatomic distances up to ``rmax`` (periodic images included), each pair once per direction."""
    _, _, _, d = structure.get_neighbor_list(rmax)
    return np.asarray(d)


def first_shell_cutoffs(structure: Structure, scale: float = 1.2, rmax: float = 5.0) -> dict[str, float]:
    """Per element: ``scale`` × the shortest neighbour distance of any atom of that element.

    Computed once on a reference structure (the start) and used for every structure compared with it, so
    the histograms count the same kind of bonds.
    """
    centers, _, _, d = structure.get_neighbor_list(rmax)
    out: dict[str, float] = {}
    for i, site in enumerate(structure):
        mine = d[(centers == i) & (d > 1e-8)]
        if mine.size:
            sym = _symbol(site)
            out[sym] = min(out.get(sym, np.inf), float(mine.min()) * scale)
    return out


def bond_angles(structure: Structure, cutoffs: dict[str, float]) -> np.ndarray:
    """Angles (degrees) neighbour–atom–neighbour at every atom, neighbours within its element's cutoff.

    pymatgen's neighbour list gives the periodic images; the angles themselves are a few lines of numpy
    (no library computes plain bond-angle distributions of a periodic cell with per-element cutoffs).
    """
    if not cutoffs:
        return np.array([])
    centers, points, images, d = structure.get_neighbor_list(max(cutoffs.values()))
    frac = structure.frac_coords
    vec = structure.lattice.get_cartesian_coords(frac[points] + images - frac[centers])
    out = []
    for i, site in enumerate(structure):
        cut = cutoffs.get(_symbol(site))
        if cut is None:
            continue
        m = (centers == i) & (d <= cut) & (d > 1e-8)
        if m.sum() < 2:
            continue
        u = vec[m] / d[m][:, None]
        cos = np.clip(u @ u.T, -1.0, 1.0)
        iu = np.triu_indices(len(u), 1)
        out.append(np.degrees(np.arccos(cos[iu])))
    return np.concatenate(out) if out else np.array([])


def min_distance(structure: Structure) -> float | None:
    _, _, _, d = structure.get_neighbor_list(5.0)
    d = d[d > 1e-8]
    return float(d.min()) if d.size else None
