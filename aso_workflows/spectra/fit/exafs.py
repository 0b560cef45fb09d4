"""EXAFS nuisance fit, as FEFFIT/Larch ``feffit`` does it for one model: S0², E0 shift, extra σ².

The model is the candidate's simulated χ(k) (unweighted FEFF χ, kept by the simulator over
0 … kmax + 1 Å⁻¹) evaluated at the shifted wavenumber and damped::

    χ_model(k) = S0² · χ_sim(q) · exp(−2 k² σ²),   q = sqrt(k² − E0·0.2625 Å⁻² eV⁻¹)

and compared k-weighted with the target through a Hanning or Kaiser–Bessel window over
``[kmin, kmax]`` — in k (``space: k``: ``w(k)·k^w·χ(k)``) or as complex χ(R) over ``[rmin, rmax]``
(``space: r``), where FEFFIT's R-factor is quoted. S0² is solved in closed form, E0 (and σ²) by a
bounded search. The E0 bounds are narrowed to the shifts for which the simulation covers every
windowed point, so nothing is extrapolated.

The campaign's objective for this target is the window-weighted MSE of k^w·χ(k) (weights w(k)²):
with ``space: k`` exactly what the fit minimises; with ``space: r`` the fit picks S0²/E0 on χ(R)
and the objective still compares χ(k).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.spectra.base import Simulator
from aso_workflows.spectra.fit.base import FitResult, NuisanceFitter, profile_fit
from aso_workflows.spectra.fit.spec import FitSpec
from aso_workflows.spectra.goodness import r_factor
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.spectra.xafs import ETOK, ftwindow, xftf

__all__ = ["EXAFSFitter", "EXAFS_BOUNDS"]

EXAFS_BOUNDS: dict[str, tuple[float, float]] = {"e0": (-15.0, 15.0), "sigma2": (-0.01, 0.03)}
"""Default bounds: E0 shift (eV) and extra σ² (Å²)."""


class EXAFSFitter(NuisanceFitter[Simulator]):
    """Fits S0², an E0 shift and an extra Debye–Waller σ² of a candidate's χ(k)."""

    technique = "exafs"
    LINEAR = "s02"
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"bounds", "max_nfev", "kmin", "kmax", "dk", "window", "space", "rmin", "rmax"}
    )

    def parameter_names(self) -> list[str]:
        return ["s02", "e0", "sigma2"]

    def __init__(self, spec: FitSpec, target: Spectrum, simulator: Simulator) -> None:
        super().__init__(spec, target, simulator)
        if spec.space == "q":
            raise InputError("fit.space", "'q' (back-transformed χ) needs the FEFFIT-grade fit: model: paths")
        k = self.target.x
        if k[0] < 0:
            raise InputError("targets.exafs", "the target's k grid starts below 0")
        self.kweight = float(getattr(simulator, "kweight", 0.0))
        dk = spec.dk
        self.kmin = spec.kmin if spec.kmin is not None else float(k[0]) + dk / 2
        self.kmax = spec.kmax if spec.kmax is not None else float(k[-1]) - dk / 2
        if self.kmax <= self.kmin:
            raise InputError(
                "fit.kmax", f"the window [{self.kmin:g}, {self.kmax:g}] Å⁻¹ is empty (dk = {dk:g})"
            )
        tol = 1e-6
        if self.kmin - dk / 2 < k[0] - tol or self.kmax + dk / 2 > k[-1] + tol:
            raise InputError(
                "fit.kmin",
                f"the window [{self.kmin:g}, {self.kmax:g}] Å⁻¹ with sills of {dk:g} reaches beyond the grid "
                f"[{k[0]:g}, {k[-1]:g}] Å⁻¹",
            )
        self.window = ftwindow(k, self.kmin, self.kmax, dk, spec.window)
        self._weights = self.window**2
        self.kstep = float(k[1] - k[0])
        if not np.allclose(np.diff(k), self.kstep, rtol=1e-6, atol=1e-9) and spec.space == "r":
            raise InputError("fit.space", "'r' needs a uniform k grid")
        support = k[self._weights > 0]
        self._k_support = (float(support[0]), float(support[-1]))
        if spec.space == "r":
            r, chir = self._ft(self.target.y)
            self._rsel = (r >= spec.rmin - 1e-9) & (r <= spec.rmax + 1e-9)
            if self._rsel.sum() < 2:
                raise InputError(
                    "fit.rmin", f"[{spec.rmin:g}, {spec.rmax:g}] Å holds fewer than 2 χ(R) points"
                )
            self._chir_data = chir[self._rsel]

    def point_weights(self) -> np.ndarray:
        return self._weights

    def _ft(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return xftf(
            self.target.x,
            values,
            rmax=self.spec.rmax + 1.0,
            kmin=self.kmin,
            kmax=self.kmax,
            dk=self.spec.dk,
            window=self.spec.window,
            kstep=self.kstep,
        )

    def _chi_sources(self, spectrum: Spectrum) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Unweighted χ on its own k grid: FEFF's full range when kept, else the spectrum's grid."""
        ex = spectrum.extra
        if ex.get("feff_k") and ex.get("feff_chi"):
            ks = np.asarray(ex["feff_k"], dtype=float)
            sites = np.asarray(ex["feff_chi_sites"], dtype=float) if ex.get("feff_chi_sites") else None
            return ks, np.asarray(ex["feff_chi"], dtype=float), sites
        ks = spectrum.x
        if ks[0] <= 0 and self.kweight:
            raise InputError("exafs spectrum", "k-weighted χ(k) starting at k = 0 cannot be unweighted")
        kw = ks**self.kweight
        sites = np.asarray(spectrum.site_values, dtype=float) / kw if spectrum.site_values else None
        return ks, spectrum.y / kw, sites

    def _e0_bounds(self, ks: np.ndarray) -> tuple[float, float]:
        lo, hi = self.bounds_of("e0", EXAFS_BOUNDS["e0"])
        k_lo, k_hi = self._k_support
        hi = min(hi, (k_lo**2 - ks[0] ** 2) / ETOK)
        lo = max(lo, (k_hi**2 - ks[-1] ** 2) / ETOK)
        if lo >= hi:
            raise InputError(
                "fit.bounds",
                f"the simulated χ(k) (k = {ks[0]:g}…{ks[-1]:g} Å⁻¹) leaves no room for an E0 shift over the "
                f"window [{k_lo:g}, {k_hi:g}] Å⁻¹",
            )
        return lo, hi

    def fit(
        self, spectrum: Spectrum, structure: Structure | None = None, fixed: Mapping[str, float] | None = None
    ) -> FitResult:
        self.check_fixed(fixed)
        spectrum = self.on_target_grid(spectrum)
        k = self.target.x
        kw = k**self.kweight
        ks, chi, chi_sites = self._chi_sources(spectrum)
        names = [n for n in ("e0", "sigma2") if n in self.spec.refine]
        x0, bounds = [], []
        for n in names:
            x0.append(0.0)
            bounds.append(self._e0_bounds(ks) if n == "e0" else self.bounds_of(n, EXAFS_BOUNDS[n]))

        def transform(x: np.ndarray, source: np.ndarray) -> np.ndarray:
            p = dict(zip(names, x, strict=True))
            q = np.sqrt(np.clip(k**2 - p.get("e0", 0.0) * ETOK, 0.0, None))
            return np.interp(q, ks, source) * kw * np.exp(-2.0 * k**2 * p.get("sigma2", 0.0))

        start = np.zeros(len(names))

        def model(x: np.ndarray) -> np.ndarray:
            if not names or np.array_equal(x, start):
                return spectrum.y
            return transform(x, chi)

        residual: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
        if self.spec.space == "r":

            def chir_residual(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                cm = self._ft(m)[1][self._rsel]
                d = self._chir_data
                return np.concatenate([d.real, d.imag]), np.concatenate([cm.real, cm.imag])

            residual = chir_residual

        scale = "s02" in self.spec.refine
        res = profile_fit(
            model, self.target.y, self._weights, x0, bounds, scale, self.spec.max_nfev, residual=residual
        )
        values = res.scale * res.model
        if self.spec.space == "r":
            goodness = r_factor(self._chir_data, self._ft(values)[1][self._rsel])
        else:
            goodness = r_factor(self.window * self.target.y, self.window * values)
        params: dict[str, float] = {}
        if scale:
            params["s02"] = res.scale
        params.update({n: float(v) for n, v in zip(names, res.values, strict=True)})
        update: dict = {"values": values.tolist()}
        if spectrum.site_values is not None:
            if names and chi_sites is not None:
                sites = np.array([transform(res.values, c) for c in chi_sites])
            else:
                sites = np.asarray(spectrum.site_values, dtype=float)
            update["site_values"] = (res.scale * sites).tolist()
        extra = {**spectrum.extra, "nuisance_fit": params}
        if hasattr(self.simulator, "chir"):
            extra.update(self.simulator.chir(values))
        update["extra"] = extra
        return FitResult(
            technique="exafs",
            parameters=params,
            goodness_name="R",
            goodness=goodness,
            mse=self.weighted_mse(values),
            n_simulations=0,
            status="fixed" if not self.spec.refine else ("converged" if res.converged else "stopped"),
            spectrum=spectrum.model_copy(update=update),
        )
