"""Restraints on bonds: windows for bond lengths and bond-valence sums, and the bond table of a structure.

A fit to a PDF can buy a lower Rw with bonds no chemist would accept (on LaMnO3, Mn–O "bonds" of
1.84–2.56 Å for a refined 1.91–2.18 Å). The campaign file can restrain them::

    restraints:
      bonds: {Mn-O: [1.85, 2.25]}                      # every Mn–O bond of the start's first shell
      bvs: {Mn-O: {valence: 3.0, r0: 1.760, tolerance: 0.3}}   # Brown's bond-valence sum per Mn

**Which bonds.** The bonds of a pair A–B are the start structure's first shell: for every A, the B
atoms (periodic images included) closer than the upper end of the window (``bonds``) or than
``cutoff`` (``bvs``), found once in the start. A candidate is the start with moved atoms (same order),
so these are the same bonds stretched or shortened: a restraint never depends on which atoms happen to
be close in a distorted candidate, and the penalty the gradient proposals use is smooth.

**Where they act.** The sampler re-draws a structure that breaks one, the gradient proposals add
:meth:`CompiledRestraints.penalty` to the acquisition (and keep only points that break none), the
polish shortens a refinement step until it keeps them, and the report flags bonds of the best structure
outside the windows (or, without restraints, outside the start's range by more than
:data:`FLAG_TOLERANCE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import Field, field_validator, model_validator
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.settings import settings_dataclass

if TYPE_CHECKING:
    import torch

__all__ = ["BondValence", "Restraints", "CompiledRestraints", "bond_table", "FLAG_TOLERANCE"]

FLAG_TOLERANCE = 0.05
"""Without restraints the report flags a bond of the best structure that lies outside the start's range
for its pair by more than this fraction (5 %)."""


def _pair(key: str) -> tuple[str, str]:
    parts = [p.strip().capitalize() for p in str(key).split("-")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{key!r}: expected a pair of elements such as 'Mn-O'")
    return parts[0], parts[1]


@settings_dataclass
class BondValence:
    """Brown's bond-valence sum of each A over its bonds to B: ``Σ exp((r0 − d)/b)`` within
    ``tolerance`` of ``valence`` (r0 from the bond-valence tables, e.g. Mn³⁺–O 1.760 Å)."""

    valence: Annotated[float, Field(gt=0)]
    r0: Annotated[float, Field(gt=0)]
    b: Annotated[float, Field(gt=0)] = 0.37
    tolerance: Annotated[float, Field(gt=0)] = 0.3
    cutoff: Annotated[float, Field(gt=0)] = 3.0


@settings_dataclass
class Restraints:
    """The campaign file's ``restraints:`` (module docstring).

    Attributes
    ----------
    bonds
        ``{"A-B": [low, high]}`` (Å): every A–B bond of the start's first shell within the window.
    bvs
        ``{"A-B": {valence, r0, b, tolerance, cutoff}}``: the bond-valence sum of every A.
    """

    bonds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    bvs: dict[str, BondValence] = Field(default_factory=dict)

    @field_validator("bonds")
    @classmethod
    def _windows(cls, v: dict) -> dict:
        out = {}
        for key, (lo, hi) in v.items():
            a, b = _pair(key)
            if not 0 <= lo < hi:
                raise ValueError(f"{key}: expected 0 ≤ low < high, got [{lo}, {hi}]")
            out[f"{a}-{b}"] = (float(lo), float(hi))
        return out

    @field_validator("bvs")
    @classmethod
    def _bvs_pairs(cls, v: dict) -> dict:
        return {"-".join(_pair(k)): x for k, x in v.items()}

    @model_validator(mode="after")
    def _something(self) -> Restraints:
        if not self.bonds and not self.bvs:
            raise ValueError("give bonds and/or bvs (or leave restraints out)")
        return self

    def compile(self, start: Structure) -> CompiledRestraints:
        """The restrained bonds of ``start`` (module docstring).

        Raises
        ------
        InputError
            On ``restraints``: a pair whose elements are not in the start, or with no bond in the window.
        """
        species = [s.specie.symbol for s in start]
        groups: list[_Group] = []
        for key, (lo, hi) in self.bonds.items():
            groups.append(_Group.find(start, species, key, hi, lo=lo, hi=hi))
        for key, bv in self.bvs.items():
            groups.append(_Group.find(start, species, key, bv.cutoff, bvs=bv))
        return CompiledRestraints(groups)


@dataclass
class _Group:
    """The bonds of one restraint: ``(i, j, image)`` with ``d = |x_j + image − x_i|`` (fractional image)."""

    key: str
    i: np.ndarray
    j: np.ndarray
    image: np.ndarray
    offset: np.ndarray  # the start's frac[j] − frac[i] of each bond: moves are taken relative to it
    lo: float | None = None
    hi: float | None = None
    bvs: BondValence | None = None

    @classmethod
    def find(cls, start: Structure, species: list[str], key: str, reach: float, **kw: object) -> _Group:
        a, b = key.split("-")
        if a not in species or b not in species:
            raise InputError(
                "restraints", f"{key}: the start structure has no {a if a not in species else b}"
            )
        ii, jj, images, dist = start.get_neighbor_list(reach + 1e-6)
        keep = [
            k
            for k in range(len(ii))
            if species[int(ii[k])] == a and species[int(jj[k])] == b and dist[k] <= reach + 1e-6
        ]
        if not keep:
            raise InputError("restraints", f"{key}: the start has no {key} bond shorter than {reach:g} Å")
        i = np.asarray(ii)[keep].astype(int)
        j = np.asarray(jj)[keep].astype(int)
        frac = np.asarray(start.frac_coords)
        return cls(
            key=key,
            i=i,
            j=j,
            image=np.asarray(images)[keep].astype(float),
            offset=frac[j] - frac[i],
            **kw,  # type: ignore[arg-type]
        )

    def vectors(self, frac: np.ndarray, lattice: np.ndarray) -> np.ndarray:
        """Bond vectors (Å): the start's bond plus each end's move (nearest image: atoms wrapped into
        the cell stay bonded to the same partner)."""
        u = frac[self.j] - frac[self.i] - self.offset
        return (self.offset + self.image + u - np.round(u)) @ lattice

    def lengths(self, frac: np.ndarray, lattice: np.ndarray) -> np.ndarray:
        return np.sqrt((self.vectors(frac, lattice) ** 2).sum(-1))

    def sums(self, lengths: np.ndarray, n_atoms: int) -> np.ndarray:
        """Bond-valence sum per atom ``i`` of the group (0 for other atoms)."""
        assert self.bvs is not None
        out = np.zeros(n_atoms)
        np.add.at(out, self.i, np.exp((self.bvs.r0 - lengths) / self.bvs.b))
        return out


@dataclass
class CompiledRestraints:
    """Restraints bound to the start's bonds: checks, a differentiable penalty, descriptions."""

    groups: list[_Group]

    def violations(self, structure: Structure) -> list[str]:
        """One line per restraint that ``structure`` breaks (empty: all kept)."""
        frac = np.asarray(structure.frac_coords)
        lat = np.asarray(structure.lattice.matrix)
        out = []
        for g in self.groups:
            d = g.lengths(frac, lat)
            if g.bvs is None:
                assert g.lo is not None and g.hi is not None
                bad = (d < g.lo - 1e-9) | (d > g.hi + 1e-9)
                if bad.any():
                    out.append(
                        f"{g.key} bond(s) outside [{g.lo:g}, {g.hi:g}] Å: {d[bad].min():.3f}–{d[bad].max():.3f}"
                    )
                continue
            owners = np.unique(g.i)
            s = g.sums(d, len(frac))[owners]
            off = np.abs(s - g.bvs.valence) > g.bvs.tolerance
            if off.any():
                out.append(
                    f"{g.key} bond-valence sum(s) {s[off].min():.2f}–{s[off].max():.2f}, "
                    f"expected {g.bvs.valence:g} ± {g.bvs.tolerance:g}"
                )
        return out

    def ok(self, structure: Structure) -> bool:
        return not self.violations(structure)

    def penalty(self, pos: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """Squared excursions (Å², valence units²) outside the windows, per structure of a batch
        ``pos [B, N, 3]`` (Cartesian), ``lattice [B, 3, 3]`` (rows): 0 inside."""
        import torch

        frac = pos @ torch.linalg.inv(lattice)
        total = pos.new_zeros(pos.shape[0])
        for g in self.groups:
            i = torch.as_tensor(g.i, device=pos.device)
            j = torch.as_tensor(g.j, device=pos.device)
            base = torch.as_tensor(g.image + g.offset, dtype=pos.dtype, device=pos.device)
            off = torch.as_tensor(g.offset, dtype=pos.dtype, device=pos.device)
            u = frac[:, j] - frac[:, i] - off
            d = torch.linalg.norm((base + u - torch.round(u)) @ lattice, dim=-1)  # [B, bonds]
            if g.bvs is None:
                assert g.lo is not None and g.hi is not None
                total = total + (torch.relu(g.lo - d) ** 2 + torch.relu(d - g.hi) ** 2).sum(-1)
                continue
            v = torch.exp((g.bvs.r0 - d) / g.bvs.b)
            sums = pos.new_zeros(pos.shape[0], pos.shape[1]).index_add(1, i, v)
            owners = torch.as_tensor(np.unique(g.i), device=pos.device)
            excess = torch.relu((sums[:, owners] - g.bvs.valence).abs() - g.bvs.tolerance)
            total = total + (excess**2).sum(-1)
        return total

    def positions(self, pos: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """Restraints do not constrain positions (:class:`~aso_workflows.symmetry.SymmetricPositions`
        does)."""
        return pos


def bond_table(
    structure: Structure, start: Structure, windows: dict[str, tuple[float, float]] | None = None
) -> list[dict]:
    """First-shell bonds per element pair of ``structure`` beside the start's (same bonds, see the
    module docstring) for each element's nearest-neighbour pair and each restrained pair, with the
    angles B–A–B' between two bonds of one A, and a flag per pair.

    Each row: ``pair``, ``n`` (bonds), ``start`` and ``best`` as ``[min, mean, max]`` Å, ``angles``
    (``[min, mean, max]`` degrees, start and best), ``window`` (the restraint's, else the start's range
    ± :data:`FLAG_TOLERANCE`) and ``flag`` (``None`` or one line saying what lies outside it).
    """
    windows = windows or {}
    species = [s.specie.symbol for s in start]
    ii, jj, _, dist = start.get_neighbor_list(4.0)
    ii, jj, dist = np.asarray(ii, dtype=int), np.asarray(jj, dtype=int), np.asarray(dist)
    pairs: dict[frozenset, tuple[str, str, float]] = {}
    for key, (_, hi) in windows.items():
        a, b = key.split("-")
        pairs[frozenset((a, b))] = (a, b, hi)
    for a in sorted(set(species)):  # each element's nearest-neighbour element: its first shell
        mask = np.array([species[x] == a for x in ii], dtype=bool)
        if not mask.any():
            continue
        k = int(np.argmin(np.where(mask, dist, np.inf)))
        b, shortest = species[int(jj[k])], float(dist[k])
        pairs.setdefault(frozenset((a, b)), (a, b, shortest * 1.15))
    rows = []
    for a, b, reach in pairs.values():
        g = _Group.find(start, species, f"{a}-{b}", reach)
        rows.append(_bond_row(g, structure, start, windows.get(f"{a}-{b}")))
    return sorted(rows, key=lambda r: r["pair"])


def _bond_row(g: _Group, structure: Structure, start: Structure, window: tuple[float, float] | None) -> dict:
    def stats(s: Structure) -> tuple[list[float], list[float]]:
        frac, lat = np.asarray(s.frac_coords), np.asarray(s.lattice.matrix)
        vec = g.vectors(frac, lat)
        d = np.sqrt((vec**2).sum(-1))
        angles = []
        for k in range(len(g.i)):
            for m in range(k + 1, len(g.i)):
                if g.i[k] == g.i[m]:
                    c = vec[k] @ vec[m] / (np.linalg.norm(vec[k]) * np.linalg.norm(vec[m]))
                    angles.append(float(np.degrees(np.arccos(np.clip(c, -1, 1)))))
        ang = [min(angles), float(np.mean(angles)), max(angles)] if angles else []
        return [float(d.min()), float(d.mean()), float(d.max())], ang

    s0, a0 = stats(start)
    s1, a1 = stats(structure)
    if window is None:
        lo, hi = s0[0] * (1 - FLAG_TOLERANCE), s0[2] * (1 + FLAG_TOLERANCE)
        source = "start ± 5 %"
    else:
        (lo, hi), source = window, "restraint"
    flag = None
    if s1[0] < lo - 1e-9 or s1[2] > hi + 1e-9:
        flag = f"{g.key} {s1[0]:.3f}–{s1[2]:.3f} Å outside [{lo:.3f}, {hi:.3f}] ({source})"
    return {
        "pair": g.key,
        "n": int(len(g.i)),
        "start": s0,
        "best": s1,
        "angles_start": a0,
        "angles_best": a1,
        "window": [lo, hi],
        "window_source": source,
        "flag": flag,
    }
