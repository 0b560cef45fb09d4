"""What a proposal search hands back, and the geometry helpers it and the batch completion share.

:class:`Proposal` (a candidate with its predicted spectra and provenance), the :data:`Predictor`
signature, the RMS displacement between structures (periodic, translation removed) and the stacking of
structures into tensors. Kept apart from :mod:`~aso_workflows.optimizers.aso.proposal` so that the
search and :mod:`~aso_workflows.optimizers.aso.fallback` both import them without a circle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Structure

if TYPE_CHECKING:
    import torch

__all__ = [
    "Predictor",
    "Proposal",
    "rms_displacement",
    "nearest_rms",
    "resolve_device",
    "stack",
    "frac",
    "species",
]

#: ``predict_torch(positions [B, N, 3] Å, lattice [B, 3, 3] Å rows) -> (mean [B, M], std [B, M])``
Predictor = Callable[["torch.Tensor", "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]


@dataclass
class Proposal:
    """One proposed candidate structure.

    Attributes
    ----------
    structure
        The candidate (fractional coordinates wrapped into the cell).
    acquisition
        Its acquisition value (lower is better).
    mean, std
        Predicted spectrum and uncertainty per technique, ``[M_t]`` arrays.
    start_index
        Index of the optimised start in the batch (for a fallback: of the random candidate).
    parent_index
        Index into ``start_structures`` of the structure the start was made from; -1 for a fresh
        perturbation of the reference structure.
    fallback
        True if no gradient-optimised candidate was usable and this is a random perturbation instead.
    search
        How the batch was searched: ``phase`` (``"explore"`` or ``"exploit"``), ``n_starts``, ``steps``,
        ``fresh_starts`` (perturbations of the reference among the starts), ``valid`` (starts whose best
        point keeps every minimum distance), ``seconds``.
    """

    structure: Structure
    acquisition: float
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    start_index: int
    parent_index: int
    fallback: bool = False
    search: dict = dataclasses.field(default_factory=dict)


def frac(pos: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
    import torch

    return pos @ torch.linalg.inv(lat)


def rms_displacement(
    frac_a: torch.Tensor, lat_a: torch.Tensor, frac_b: torch.Tensor, lat_b: torch.Tensor
) -> torch.Tensor:
    """RMS atomic displacement (Å) between every structure of set A and every one of set B, ``[A, R]``.

    Periodic-aware (each displacement is wrapped to the nearest image in fractional coordinates) and
    with the best global translation removed (a circular mean per axis first, so that a shift by half a
    cell is handled, then the Euclidean mean). Displacements are converted to Å with the mean of the two
    lattices. The nearest image is taken in fractional coordinates, exact for displacements small
    compared with the cell — the only ones a diversity threshold is about.

    Parameters
    ----------
    frac_a, frac_b
        Fractional coordinates ``[A, N, 3]`` and ``[R, N, 3]`` (same species order).
    lat_a, lat_b
        Lattices (rows) ``[A, 3, 3]`` and ``[R, 3, 3]``.
    """
    import torch

    frac_a, lat_a, frac_b, lat_b = (x.detach() for x in (frac_a, lat_a, frac_b, lat_b))  # no gradient
    na, nr = frac_a.shape[0], frac_b.shape[0]
    out = frac_a.new_zeros(na, nr)
    if na == 0 or nr == 0:
        return out
    n = frac_a.shape[1]
    chunk = max(1, 2_000_000 // max(1, nr * n))
    for s in range(0, na, chunk):
        fa, la = frac_a[s : s + chunk], lat_a[s : s + chunk]
        d = frac_b[None] - fa[:, None]  # [a, R, N, 3]
        d = d - torch.round(d)
        angle = 2 * torch.pi * d
        shift = torch.atan2(torch.sin(angle).mean(-2, keepdim=True), torch.cos(angle).mean(-2, keepdim=True))
        d = d - shift / (2 * torch.pi)
        d = d - torch.round(d)
        d = d - d.mean(-2, keepdim=True)
        lat = 0.5 * (la[:, None] + lat_b[None])  # [a, R, 3, 3]
        cart = d @ lat
        out[s : s + chunk] = torch.sqrt((cart**2).sum(-1).mean(-1))
    return out


def species(structure: Structure) -> list[str]:
    return [site.specie.symbol for site in structure]


def stack(structures: Sequence[Structure]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractional coordinates [S, N, 3] and lattices [S, 3, 3] as float64."""
    import torch

    if not structures:
        return torch.zeros(0, 0, 3, dtype=torch.float64), torch.zeros(0, 3, 3, dtype=torch.float64)
    frac = torch.tensor(np.stack([s.frac_coords for s in structures]), dtype=torch.float64)
    lat = torch.tensor(np.stack([s.lattice.matrix for s in structures]), dtype=torch.float64)
    return frac, lat


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def nearest_rms(structure: Structure, others: Sequence[Structure]) -> float:
    """Smallest RMS displacement (Å, periodic, translation removed) from ``structure`` to any of
    ``others`` (``inf`` if none)."""
    import torch

    if not others:
        return float("inf")
    fa = torch.tensor(structure.frac_coords)[None]
    la = torch.tensor(structure.lattice.matrix)[None]
    fb = torch.tensor(np.stack([s.frac_coords for s in others]))
    lb = torch.tensor(np.stack([s.lattice.matrix for s in others]))
    return float(rms_displacement(fa, la, fb, lb).min())
