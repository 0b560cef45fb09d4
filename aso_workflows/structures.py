"""Reading structures, fingerprints and minimum-distance constraints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from aso_workflows.errors import InputError

__all__ = [
    "load_structure",
    "structure_fingerprint",
    "settings_hash",
    "min_distance_table",
    "shortest_pair_distances",
    "pair_min_distance_matrix",
    "violates_min_distance",
]


_FORMATS = "CIF, POSCAR, pymatgen JSON or PDFfit .stru"


def _read_stru(path: Path) -> Structure:
    """A PDFfit/PDFgui ``.stru`` file through diffpy.structure: cell and atoms; atoms of occupancy 0 (a
    template's placeholders, as Ca in PDFgui's LaMnO3 file) are left out. Its ADPs are not read: the
    campaign's simulator settings (``biso``) and fit give them."""
    from diffpy.structure import loadStructure

    d = loadStructure(str(path), fmt="pdffit")
    atoms = [a for a in d if a.occupancy > 0]
    if any(a.occupancy < 1 for a in atoms):
        raise ValueError("partial occupancies; an ordered cell is expected")
    lat = Lattice.from_parameters(*d.lattice.abcABG())
    return Structure(lat, [a.element.capitalize() for a in atoms], [a.xyz for a in atoms])


def load_structure(path: str | Path) -> Structure:
    """Read a structure file (CIF, POSCAR, JSON, ...) with a one-line error on failure.

    Parameters
    ----------
    path
        Any format pymatgen's ``Structure.from_file`` reads, or a PDFfit ``.stru`` file.

    Raises
    ------
    InputError
        If the file is missing, empty, unreadable, has no atoms or has overlapping atoms.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, f"file not found (expected a structure file: {_FORMATS})")
    if p.stat().st_size == 0:
        raise InputError(p, f"file is empty (expected a structure file: {_FORMATS})")
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = _read_stru(p) if p.suffix.lower() == ".stru" else Structure.from_file(str(p))
    except Exception as exc:  # pymatgen raises many types; condense to one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(p, f"could not be read as a structure ({msg}); expected a {_FORMATS} file") from None
    if len(s) == 0:
        raise InputError(p, "structure has no atoms")
    if not s.is_ordered:
        raise InputError(p, "structure is disordered (partial occupancies); an ordered cell is expected")
    if s.lattice.volume <= 0:
        raise InputError(p, "unit cell volume is not positive")
    if len(s) > 1:
        dmin = float(np.min(s.distance_matrix[np.triu_indices(len(s), 1)]))
        if dmin < 0.5:
            raise InputError(p, f"atoms overlap (closest pair {dmin:.3f} Å; expected ≥ 0.5 Å)")
    return s


def structure_fingerprint(structure: Structure, decimals: int = 4) -> str:
    """A stable hash of species, lattice and fractional positions (rounded, wrapped into [0, 1)).

    Two structures with the same fingerprint give the same spectra; used for caches and unique keys.
    """
    frac = np.mod(np.round(structure.frac_coords, decimals), 1.0)
    frac = np.round(np.where(frac > 1 - 10**-decimals, 0.0, frac), decimals)
    payload = {
        "species": [str(sp) for sp in structure.species],
        "lattice": np.round(structure.lattice.matrix, decimals).tolist(),
        "frac": frac.tolist(),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def settings_hash(settings: Mapping) -> str:
    """A short stable hash of a settings mapping (JSON with sorted keys)."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _default_pair_distance(a: str, b: str, scale: float) -> float:
    """Default minimum distance: ``scale`` × sum of covalent-ish radii (pymatgen atomic radii)."""
    ra = Element(a).atomic_radius or 1.0
    rb = Element(b).atomic_radius or 1.0
    return float(scale * (ra + rb))


REFERENCE_FRACTION = 0.9
"""Default cap of a pair's minimum distance, as a fraction of its shortest distance in the start structure."""


def shortest_pair_distances(structure: Structure) -> dict[tuple[str, str], float]:
    """The shortest distance (Å, minimum image) between sites of each element pair in ``structure``.

    Both orders are keys. A pair of one element needs two sites of it (an atom's distance to its own
    periodic image is a lattice vector, not a property of the positions).
    """
    species = [site.specie.symbol for site in structure]
    out: dict[tuple[str, str], float] = {}
    if len(structure) < 2:
        return out
    dm = np.array(structure.distance_matrix, dtype=float)
    np.fill_diagonal(dm, np.inf)
    for a in sorted(set(species)):
        ia = [k for k, x in enumerate(species) if x == a]
        for b in sorted(set(species)):
            ib = [k for k, x in enumerate(species) if x == b]
            d = float(dm[np.ix_(ia, ib)].min())
            if np.isfinite(d):
                out[(a, b)] = d
    return out


def min_distance_table(
    elements: list[str],
    overrides: Mapping[str, float] | None = None,
    scale: float = 0.7,
    reference: Structure | None = None,
    reference_fraction: float = REFERENCE_FRACTION,
) -> dict[tuple[str, str], float]:
    """Minimum allowed distance for every element pair.

    Parameters
    ----------
    elements
        The elements present.
    overrides
        Entries like ``{"Ni-O": 1.7}`` (either order) that replace the default.
    scale
        Default is ``scale × (r_a + r_b)`` with pymatgen's empirical atomic radii
        (e.g. Ni–O ≈ 1.5 Å, O–O ≈ 0.8 Å, C–C ≈ 0.98 Å for scale 0.7).
    reference
        A structure known to be physical (a campaign's start): a default (not overridden) distance is
        capped at ``reference_fraction`` × the pair's shortest distance in it. The empirical radii are
        metallic radii, too large for ions: Cs–Cs gets 3.64 Å, while the Cs–Cs distance of the ``ht``
        start 048 (Cs12Si4O14) is 3.69 Å — no perturbation of it keeps every pair above the table.
    reference_fraction
        The cap's fraction (default :data:`REFERENCE_FRACTION`).
    """
    overrides = dict(overrides or {})
    shortest = shortest_pair_distances(reference) if reference is not None else {}
    table: dict[tuple[str, str], float] = {}
    els = sorted(set(elements))
    for i, a in enumerate(els):
        for b in els[i:]:
            d = _default_pair_distance(a, b, scale)
            if (a, b) in shortest:
                d = min(d, reference_fraction * shortest[(a, b)])
            for key in (f"{a}-{b}", f"{b}-{a}"):
                if key in overrides:
                    d = float(overrides[key])
            table[(a, b)] = table[(b, a)] = d
    unknown = [k for k in overrides if tuple(k.split("-")) not in table]
    if unknown:
        raise InputError("min_distances", f"unknown element pair(s) {unknown}; expected pairs of {els}")
    return table


def pair_min_distance_matrix(species: list[str], table: Mapping[tuple[str, str], float]) -> np.ndarray:
    """An (N, N) matrix of the minimum allowed distance between atoms i and j."""
    n = len(species)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = table[(species[i], species[j])]
    return out


def violates_min_distance(structure: Structure, table: Mapping[tuple[str, str], float]) -> bool:
    """True if any pair of atoms (periodic images included) is closer than its minimum distance."""
    species = [sp.symbol for sp in structure.species]
    dmin = pair_min_distance_matrix(species, table)
    dm = structure.distance_matrix  # minimum-image distances, periodic
    np.fill_diagonal(dm, np.inf)
    if np.any(dm < dmin):
        return True
    # An atom closer than the limit to its own periodic image (tiny cells)
    lat = structure.lattice
    self_d = min(lat.abc)
    return bool(any(self_d < table[(s, s)] for s in set(species)))


def make_lattice(matrix: np.ndarray) -> Lattice:
    return Lattice(np.asarray(matrix, dtype=float))
