"""EXAFS χ(k) with FEFF path expansion: one FEFF run per absorbing site, then an average.

Measured on LiNiO2 (Ni K, one absorber, 2-core machine shared with other jobs; see
``benchmarks/simulators.py``): the defaults (cluster 7 Å, RPATH 6 Å, NLEG 4, no SCF) take 3–5 s, of
which ~1.2 s is the start-up of FEFF's 18 stage processes; pymatgen's ``MPEXAFSSet`` default
(RPATH 10, NLEG 8) took 306 s and overflowed FEFF's path heap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from aso_workflows.errors import SimulationError
from aso_workflows.settings import settings_dataclass
from aso_workflows.spectra.feff_absorber import (
    AbsorberElement,
    Debye,
    Edge,
    EngineName,
    FeffAbsorberSimulator,
    NonNegative,
    Positive,
    Sites,
    Supercell,
)
from aso_workflows.spectra.feff_paths import FF2X_PRINT_PATHS, read_chi_paths, read_feff_paths
from aso_workflows.spectra.spectrum import Grid, Spectrum
from aso_workflows.spectra.xafs import chir_magnitude

__all__ = ["EXAFSSimulator", "k_grid", "K_MARGIN"]

K_MARGIN = 1.0
"""Å⁻¹ computed beyond ``kmax``: room for an E0 shift of up to ~95 eV at k = 12 Å⁻¹ (k² + ΔE0/3.81)."""


def k_grid(kmin: float, kmax: float, kstep: float) -> np.ndarray:
    """``kmin, kmin + kstep, … , kmax`` (both ends included; 181 points for 3–12 Å⁻¹ by 0.05)."""
    n = int(round((kmax - kmin) / kstep)) + 1
    return np.round(kmin + kstep * np.arange(n), 10)


@settings_dataclass
class EXAFSSimulator(FeffAbsorberSimulator):
    """EXAFS k^w·χ(k) averaged over absorbing sites, with FEFF path expansion (``MPEXAFSSet``).

    Parameters
    ----------
    absorber
        Absorbing element, e.g. ``"Ni"``.
    edge
        ``"K"``, ``"L3"`` ...
    supercell
        Repetitions of the cell before the clusters are cut (reference 2×2×2). pymatgen cuts the
        cluster from the periodic structure, so this changes the file header, not the physics.
    sites
        ``"all"`` absorbers of the element, an integer (that many, chosen at random with ``seed``),
        or a list of indices into the input structure.
    radius
        Cluster radius (Å) written to ``feff.inp`` (reference 10).
    rpath
        Longest half path length (FEFF ``RPATH``, Å; reference 10 via ``MPEXAFSSet``).
    nlegs
        Most legs per path (FEFF ``NLEG``; FEFF's default 8).
    scf
        Self-consistent potential radius (Å; ``SCF r 0 30 0.2 1``) or ``None`` for overlapped atomic
        potentials (reference 4.5; SCF changes EXAFS little, see METHOD.md, and costs ~100 s).
    debye
        ``(T, θ_D)`` in K for correlated-Debye-model Debye–Waller factors (FEFF ``DEBYE``), or
        ``None`` for none (the reference's ``MPEXAFSSet`` has none, giving undamped χ(k)).
    kmin, kmax, kstep
        The χ(k) grid (Å⁻¹): 3–12 by 0.05 is the reference's 181 points. FEFF runs from k = 0 to
        ``kmax`` + :data:`K_MARGIN` (at most 20), and its χ(k) over that whole range is kept in
        ``extra["feff_k"]``/``extra["feff_chi"]`` (unweighted; per site in ``extra["feff_chi_sites"]``)
        so that an E0 shift fitted to measured data can be applied without extrapolating.
    kweight
        The spectrum is k^kweight·χ(k) (the reference used χ(k) itself: ``kweight=0``).
    rmax_ft, ft_dk
        |χ(R)| kept up to ``rmax_ft`` Å; Hanning sill width (Å⁻¹) of the transform window.
    seed
        Seed of the random subset when ``sites`` is an integer.
    engine
        ``"feff10-rs"`` or the path of a FEFF executable.
    timeout
        Wall-clock limit per absorber run in seconds (``None``: none).
    keep_binaries
        Keep FEFF's ``*.bin`` intermediates (~4 MB per run) instead of deleting them after a run.
    keep_paths
        Have FEFF write its scattering paths (``feffNNNN.dat``) and keep them, parsed by xraylarch, in
        ``extra["feff_paths"]`` (:mod:`~aso_workflows.spectra.feff_paths`; needs ``aso-workflows[xas]``).
        The FEFFIT-grade fit (``fit: {model: paths}``) needs them and turns this on itself.
    """

    absorber: AbsorberElement
    edge: Edge = "K"
    supercell: Supercell = (2, 2, 2)
    sites: Sites = "all"
    radius: Positive = 7.0
    rpath: Positive = 6.0
    nlegs: Annotated[int, Field(ge=2)] = 4
    scf: Positive | None = None
    debye: Debye = (300.0, 500.0)
    kmin: NonNegative = 3.0
    kmax: Annotated[float, Field(allow_inf_nan=False)] = 12.0
    kstep: Positive = 0.05
    kweight: NonNegative = 2.0
    rmax_ft: Positive = 6.0
    ft_dk: NonNegative = 1.0
    seed: int = 0
    engine: EngineName = "feff10-rs"
    timeout: Positive | None = None
    keep_binaries: bool = False
    keep_paths: bool = False

    technique = "exafs"
    output_file = "chi.dat"

    @field_validator("kmax")
    @classmethod
    def _kmax(cls, v: float, info: ValidationInfo) -> float:
        kmin = info.data.get("kmin")
        if kmin is not None and v <= kmin:
            raise ValueError(f"must be larger than kmin = {kmin:g} Å⁻¹, got {v:g}")
        if v > 20:
            raise ValueError(f"FEFF's EXAFS card goes to 20 Å⁻¹ at most, got {v:g}")
        return v

    @field_validator("kstep")
    @classmethod
    def _kstep(cls, v: float, info: ValidationInfo) -> float:
        kmin, kmax = info.data.get("kmin"), info.data.get("kmax")
        if kmin is not None and kmax is not None and (kmax - kmin) / v < 1:
            raise ValueError(f"gives fewer than 2 points between kmin and kmax, got {v:g}")
        return v

    def k(self) -> np.ndarray:
        """The k grid (Å⁻¹)."""
        return k_grid(self.kmin, self.kmax, self.kstep)

    def grid(self) -> Grid:
        return Grid(name="k", unit="Å^-1", values=self.k().tolist())

    def _feff_set(self) -> type:
        from pymatgen.io.feff.sets import MPEXAFSSet

        return MPEXAFSSet

    def _tags(self) -> dict:
        tags: dict = {"RPATH": self.rpath, "NLEG": self.nlegs, "EXAFS": min(20.0, self.kmax + K_MARGIN)}
        if self.keep_paths:  # FEFF writes feffNNNN.dat from this ff2x print level on
            tags["PRINT"] = f"1 0 0 0 0 {FF2X_PRINT_PATHS}"
        delete: list[str] = []
        self._scf_and_debye_tags(tags, delete)
        if delete:
            tags["_del"] = delete
        return tags

    def chir(self, values: np.ndarray) -> dict:
        """``{"r": [...], "chir_mag": [...]}`` of k^w·χ(k) values on :meth:`k`."""
        r, mag = chir_magnitude(self.k(), values, self.rmax_ft, dk=self.ft_dk, kstep=self.kstep)
        return {"r": r.tolist(), "chir_mag": mag.tolist()}

    def _parse(self, data: np.ndarray) -> tuple[np.ndarray, dict]:
        # chi.dat columns: k, χ, |χ|, phase
        kf, chi = data[:, 0], data[:, 1]
        k = self.k()
        if kf[0] > k[0] + 1e-6 or kf[-1] < k[-1] - 1e-6:
            raise SimulationError(
                f"FEFF's χ(k) covers [{kf[0]:g}, {kf[-1]:g}] Å⁻¹, not the grid [{k[0]:g}, {k[-1]:g}]"
            )
        values = np.interp(k, kf, chi) * k**self.kweight
        return values, {**self.chir(values), "feff_k": kf.tolist(), "feff_chi": chi.tolist()}

    def _run_outputs(self, directory: Path, site: int) -> dict:
        if not self.keep_paths:
            return {}
        return {
            "feff_paths": [p.model_dump() for p in read_feff_paths(directory, site)],
            "feff_chi_paths": [read_chi_paths(directory / "chi.dat", site)],  # what chi.dat summed
        }

    def _combine_values(self, spectra: list[Spectrum]) -> tuple[np.ndarray, dict]:
        per_site = np.array([s.values for s in spectra], dtype=float)
        extra = self.chir(per_site.mean(axis=0))
        if self.keep_paths:  # every absorber's paths (each names its site)
            extra["feff_paths"] = [p for s in spectra for p in s.extra.get("feff_paths") or []]
            extra["feff_chi_paths"] = [c for s in spectra for c in s.extra.get("feff_chi_paths") or []]
        raw = [s.extra.get("feff_chi") for s in spectra]
        chis = [r for r in raw if r is not None]
        if len(chis) == len(raw) and len({len(r) for r in chis}) == 1:
            chi_sites = np.array(chis, dtype=float)
            extra["feff_k"] = list(spectra[0].extra["feff_k"])
            extra["feff_chi"] = chi_sites.mean(axis=0).tolist()
            extra["feff_chi_sites"] = chi_sites.tolist()
        return per_site, extra
