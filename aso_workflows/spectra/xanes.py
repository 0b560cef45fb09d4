"""XANES μ(E) with FEFF full multiple scattering: one FEFF run per absorbing site, then an average.

The reference settings (cluster 6 Å, SCF 4.5 Å, FMS 4.5 Å) take ~80–120 s per absorber for LiNiO2
(Ni K), >90 % of it in the SCF loop (``benchmarks/simulators.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator

from aso_workflows.errors import InputError, SimulationError
from aso_workflows.settings import settings_dataclass
from aso_workflows.spectra.feff_absorber import (
    AbsorberElement,
    Debye,
    Edge,
    EngineName,
    FeffAbsorberSimulator,
    Positive,
    Sites,
    Supercell,
)
from aso_workflows.spectra.spectrum import Grid, Spectrum
from aso_workflows.spectra.xafs import normalize_xmu

__all__ = ["XANESSimulator", "xanes_energy_grid"]


def _egrid(v: Any) -> tuple[tuple[float, float, float], ...]:
    try:
        segs = tuple(tuple(float(x) for x in seg) for seg in v)
    except (TypeError, ValueError):
        raise ValueError(f"expected [start, stop, step] segments, got {v!r}") from None
    if not segs or any(len(s) != 3 or s[2] <= 0 or s[1] <= s[0] for s in segs):
        raise ValueError(f"expected [start, stop, step] segments with stop > start, step > 0, got {v!r}")
    if any(a[1] != b[0] for a, b in zip(segs[:-1], segs[1:], strict=False)):
        raise ValueError(f"each segment must start where the previous one stops, got {v!r}")
    if segs[0][0] >= 0 or segs[-1][1] <= 0:
        raise ValueError("the grid must span the edge (start < 0 < stop)")
    return tuple((s[0], s[1], s[2]) for s in segs)  # each of length 3 (checked above)


def _post_edge(v: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"expected [low, high] in eV above E0, got {v!r}") from None
    if not 0 < lo < hi:
        raise ValueError(f"expected 0 < low < high (eV above E0), got {v!r}")
    return (lo, hi)


# FEFF's free-electron relation E = ħ²k²/2m: 3.80998 eV Å².
_HBAR2_2M = 3.80998


def xanes_energy_grid(segments: Sequence[Sequence[float]]) -> np.ndarray:
    """Concatenated ``(start, stop, step)`` segments, each stop excluded except the last one's.

    The reference grid ``((-110, -20, 2), (-20, 30, 0.5), (30, 100, 1))`` gives 45 + 100 + 71 = 216
    points from −110 to 100 eV.
    """
    parts = []
    for i, (start, stop, step) in enumerate(segments):
        n = int(round((stop - start) / step))
        last = i == len(segments) - 1
        parts.append(start + step * np.arange(n + 1 if last else n))
    return np.round(np.concatenate(parts), 10)


@settings_dataclass
class XANESSimulator(FeffAbsorberSimulator):
    """XANES: normalised μ(E) on an energy grid relative to the edge, averaged over absorbing sites.

    FEFF full multiple scattering (``MPXANESSet``), reported on the reference grid −110…100 eV
    around E0 (E0 is FEFF's edge energy, ``omega − e`` of ``xmu.dat``; kept in ``extra["e0"]``).

    FEFF's XANES grid starts ~6 eV below E0. Below its first point the normalised μ is continued
    by the asymptotic tail of a Lorentzian-broadened edge step, μ ∝ 1/|e| (matched to FEFF's first
    point; ≈ 0.004 at −110 eV): FEFF computes only the absorber's edge, whose absorption below the
    edge is nothing but that tail. FEFF's own ``EGRID`` card would reach −110 eV, but in FEFF 10.0
    via feff10-rs 0.2.4 it gives NaN (grids starting at −30 or −15 eV, including FEFF's documented
    example) or a negative pre-edge (starting at −110 eV), so it is not used.

    Parameters
    ----------
    absorber, edge, supercell, sites, seed, engine, timeout, keep_binaries
        As for :class:`EXAFSSimulator`.
    radius
        Cluster radius (Å; reference 6).
    fms
        Full-multiple-scattering radius (Å; FEFF ``FMS r 0``; reference 4.5).
    scf
        Self-consistent potential radius (Å; reference 4.5) or ``None`` (cheaper, shifts E0 by ~10 eV).
    debye
        ``(T, θ_D)`` in K (FEFF ``DEBYE T θ_D``, correlated Debye model) or ``None``. The reference's
        ``DEBYE 300 0 1`` does not run in FEFF 10 (method 1 needs a ``spring.inp``) and θ_D = 0 gives
        an unbounded σ² that wipes out the fine structure, so a finite θ_D is the default.
    egrid
        ``(start, stop, step)`` segments of the output grid in eV relative to E0 (reference).
    post_edge
        Energy range (eV above E0) of the post-edge line that defines the edge step (normalisation).
    """

    absorber: AbsorberElement
    edge: Edge = "K"
    supercell: Supercell = (2, 2, 2)
    sites: Sites = "all"
    radius: Positive = 6.0
    fms: Positive = 4.5
    scf: Positive | None = 4.5
    debye: Debye = (300.0, 500.0)
    egrid: Annotated[tuple[tuple[float, float, float], ...], BeforeValidator(_egrid)] = (
        (-110.0, -20.0, 2.0),
        (-20.0, 30.0, 0.5),
        (30.0, 100.0, 1.0),
    )
    post_edge: Annotated[tuple[float, float], BeforeValidator(_post_edge)] = (30.0, 100.0)
    seed: int = 0
    engine: EngineName = "feff10-rs"
    timeout: Positive | None = None
    keep_binaries: bool = False

    technique = "xanes"
    output_file = "xmu.dat"

    def e(self) -> np.ndarray:
        """The energy grid relative to E0 (eV)."""
        return xanes_energy_grid(self.egrid)

    def grid(self) -> Grid:
        return Grid(name="e", unit="eV", values=self.e().tolist())

    def _feff_set(self) -> type:
        from pymatgen.io.feff.sets import MPXANESSet

        return MPXANESSet

    def xkmax(self) -> float:
        """FEFF's ``XANES`` k range (Å⁻¹), enough for the grid and the post-edge fit.

        FEFF counts this k from its Fermi level, not from E0 (with SCF the Fermi level drops by
        ~12 eV for LiNiO2 and a 5.4 Å⁻¹ range stopped at 99 eV above E0): 30 eV of margin.
        """
        emax = max(self.egrid[-1][1], self.post_edge[1]) + 30.0
        return math.ceil(10 * math.sqrt(emax / _HBAR2_2M)) / 10

    def _tags(self) -> dict:
        # MPXANESSet's LDOS card only adds l-projected DOS (13 s for LiNiO2): not needed for μ(E).
        tags: dict = {"FMS": f"{self.fms:g} 0", "XANES": f"{self.xkmax():g} 0.04 0.1"}
        delete = ["LDOS"]
        self._scf_and_debye_tags(tags, delete)
        tags["_del"] = delete
        return tags

    def _parse(self, data: np.ndarray) -> tuple[np.ndarray, dict]:
        # xmu.dat columns: omega (absolute eV), e (relative to the edge), k, μ, μ0, χ
        omega, e, mu = data[:, 0], data[:, 1], data[:, 3]
        e0 = float(omega[0] - e[0])
        try:
            norm, step = normalize_xmu(e, mu, self.post_edge)
        except ValueError as exc:  # FEFF's μ(E) has no usable post-edge: the run's output is unusable
            raise SimulationError(f"cannot normalise FEFF's μ(E): {exc}") from None
        grid = self.e()
        if e[-1] < grid[-1] - 1e-6:
            raise SimulationError(f"FEFF's μ(E) stops at {e[-1]:g} eV, below the grid's end {grid[-1]:g} eV")
        if e[0] >= 0:
            raise SimulationError(f"FEFF's μ(E) starts above the edge ({e[0]:g} eV)")
        values = np.interp(grid, e, norm)
        below = grid < e[0]
        values[below] = norm[0] * e[0] / grid[below]  # Lorentzian tail ∝ 1/|e| (class docstring)
        return values, {"e0": e0, "edge_step": step}

    def _combine_values(self, spectra: list[Spectrum]) -> tuple[np.ndarray, dict]:
        # Sites can have different E0 (chemical shifts): put each on the common reference (the mean
        # E0) before averaging, i.e. average on the absolute energy scale.
        e0s = np.array([float(s.extra.get("e0", np.nan)) for s in spectra])
        if not np.all(np.isfinite(e0s)):
            raise InputError("site_spectra", "every XANES site spectrum needs extra['e0']")
        e0 = float(e0s.mean())
        grid = self.e()
        per_site = np.array(
            [np.interp(grid + (e0 - e0_i), grid, s.values) for s, e0_i in zip(spectra, e0s, strict=True)]
        )
        return per_site, {"e0": e0, "site_e0": e0s.tolist()}
