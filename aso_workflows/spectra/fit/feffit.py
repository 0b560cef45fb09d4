"""FEFFIT-grade EXAFS fit of every candidate: Larch's ``feffit`` on the candidate's own FEFF paths.

``fit: {model: paths}`` on an EXAFS target. The candidate's EXAFS simulation keeps FEFF's scattering
paths (``keep_paths``, :mod:`~aso_workflows.spectra.feff_paths`); each absorber's paths enter with
their degeneracy divided by the number of absorbers averaged, so the model is the average of the
absorbers' path sums. Path parameters, as Artemis users write them:

* ``s02`` — S0², one amplitude factor for every path;
* ``e0`` — ΔE0 (eV), one for every path;
* ``sigma2`` — σ² (Å²): one for every path (``sigma2_model: global``), one per shell (``shell``), or
  from one fitted Debye / Einstein temperature θ at the sample temperature (``debye``/``einstein``,
  Larch's ``sigma2_debye``/``sigma2_eins``, which know each path's geometry and masses);
* ``expansion`` — α, a uniform expansion of the structure: ΔR = α·R_eff for every path (FEFFIT's
  ``alpha*reff``); shared with a PDF target that refines it (one cell for both).

The fit is Larch's own: ``feffit_transform`` (k range, ``dk``, Kaiser/Hanning window, k-weight(s),
R range, space ``k``/``r``/``q``), ``feffit_dataset`` with the paths rebuilt from the stored
documents, ``feffit`` (Levenberg–Marquardt through lmfit). So R-factor, χ², reduced χ² (with Larch's
noise estimate ε from χ(R) at 15–30 Å) and the uncertainties (covariance, scaled by √χ²ᵣ as FEFFIT
does) are exactly Larch's — ``benchmarks/xafs_vs_larch.py`` runs Larch's ``feffit`` on the same paths
beside the campaign and compares.

The data are the target's χ(k) as AUTOBK made it (``extra["xas"]``, uniform from k = 0), or, for a
χ(k) target file, the target divided by its k-weight. The fitted spectrum (what the campaign stores
and the surrogate learns) is the fitted model k-weighted as the simulator's spectra, on the target's
grid; the campaign's MSE is taken where the fit is done (:meth:`FeffitFitter.fit_space`: complex χ(R)
over the fit's R range in R space; the window-weighted χ(k) in k and q space).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pymatgen.core import Structure

from aso_workflows.errors import InputError, SimulationError
from aso_workflows.spectra.base import Simulator
from aso_workflows.spectra.feff_paths import FeffPath, first_shell, paths_of
from aso_workflows.spectra.fit.base import FitResult, NuisanceFitter
from aso_workflows.spectra.fit.spec import FitSpec
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.spectra.xafs import ftwindow, xftf

__all__ = ["FeffitFitter", "FEFFIT_BOUNDS", "shells"]

FEFFIT_BOUNDS: dict[str, tuple[float, float]] = {
    "s02": (0.0, 3.0),
    "e0": (-15.0, 15.0),
    "sigma2": (-0.005, 0.05),
    "theta": (50.0, 1500.0),
    "expansion": (-0.05, 0.05),
    "third": (-0.002, 0.002),
}
"""Default bounds: S0², ΔE0 (eV), σ² (Å²), Debye/Einstein θ (K; ``bounds: {sigma2: ...}`` sets it for
those models), expansion α."""


def shells(paths: list[FeffPath], gap: float) -> dict[str, int]:
    """Shell number (1, 2, …) of every path label: the single-scattering path lengths, sorted, start a
    new shell where two consecutive ones are more than ``gap`` Å apart; every path (multiple
    scattering too) joins the shell of the single-scattering length nearest its own half length."""
    lengths = sorted({p.reff for p in paths if p.nleg == 2}) or sorted({p.reff for p in paths})
    numbers = np.cumsum([1] + [int(b - a > gap) for a, b in zip(lengths, lengths[1:], strict=False)])
    r = np.asarray(lengths)
    return {p.label: int(numbers[int(np.argmin(np.abs(r - p.reff)))]) for p in paths}


class FeffitFitter(NuisanceFitter[Simulator]):
    """S0², ΔE0, σ² and the expansion of a candidate's FEFF paths, fitted by Larch's ``feffit``."""

    technique = "exafs"
    LINEAR = ""
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"bounds", "max_nfev", "kmin", "kmax", "dk", "window", "space", "rmin", "rmax", "model"}
        | {"sigma2_model", "temperature", "shell_gap", "kweight"}
    )
    SHARED: ClassVar[frozenset[str]] = frozenset({"expansion"})

    def parameter_names(self) -> list[str]:
        return ["s02", "e0", "sigma2", "expansion", "third"]

    def __init__(self, spec: FitSpec, target: Spectrum, simulator: Simulator) -> None:
        super().__init__(spec, target, simulator)
        from aso_workflows.spectra.xraylarch import larch_modules

        larch_modules("fit.model")  # one line now if xraylarch is missing, not at the first candidate
        if not getattr(simulator, "keep_paths", False):
            raise InputError("fit.model", "'paths' needs the EXAFS simulator's settings.keep_paths: true")
        self.kweight = float(getattr(simulator, "kweight", 0.0))
        self.fit_kweights = list(spec.kweight) if spec.kweight else [self.kweight]
        k = self.target.x
        self.kmin = spec.kmin if spec.kmin is not None else float(k[0])
        self.kmax = spec.kmax if spec.kmax is not None else float(k[-1])
        if self.kmax <= self.kmin:
            raise InputError("fit.kmax", f"the window [{self.kmin:g}, {self.kmax:g}] Å⁻¹ is empty")
        self.data_k, self.data_chi = self._data()
        if self.kmax > self.data_k[-1] + 1e-6:
            raise InputError(
                "fit.kmax",
                f"{self.kmax:g} Å⁻¹ is beyond the data's χ(k), which ends at {self.data_k[-1]:g} Å⁻¹",
            )
        if spec.space != "k" and spec.rmax <= spec.rmin:
            raise InputError("fit.rmax", f"must be larger than rmin ({spec.rmin:g} Å)")
        self._weights = ftwindow(k, self.kmin, self.kmax, spec.dk, spec.window) ** 2
        self._kstep = float(k[1] - k[0])
        if spec.space == "r" and not np.allclose(np.diff(k), self._kstep, rtol=1e-6, atol=1e-9):
            raise InputError("fit.space", "'r' needs the target on a uniform k grid")
        if not np.any(self._weights > 0):
            raise InputError(
                "fit.kmin", f"the window [{self.kmin:g}, {self.kmax:g}] Å⁻¹ holds no target point"
            )
        debye = getattr(simulator, "debye", None)
        self.temperature = float(
            spec.temperature if spec.temperature is not None else (debye[0] if debye else 300.0)
        )
        self.theta = float(debye[1]) if debye else 300.0

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        """The data's unweighted χ(k): AUTOBK's (raw μ(E) targets) or the target ÷ k^kweight."""
        xas = self.target.extra.get("xas") or {}
        self.data_dchi = np.asarray(xas["delta_chi"], dtype=float) if xas.get("delta_chi") else None
        if xas.get("k") and xas.get("chi"):
            return np.asarray(xas["k"], dtype=float), np.asarray(xas["chi"], dtype=float)
        k = self.target.x
        w = float(self.target.settings.get("kweight", self.kweight) or 0.0)
        if w and k[0] <= 0:
            raise InputError(
                "targets.exafs", "a k-weighted χ(k) target starting at k = 0 cannot be unweighted"
            )
        return k, self.target.y / k**w

    def point_weights(self) -> np.ndarray:
        return self._weights

    def fit_space(self, values: np.ndarray) -> np.ndarray | None:
        """k-weighted χ(k) on the target grid → real and imaginary χ(R) over ``[rmin, rmax]`` (``space:
        r``; ``None`` in k and q space, compared in k by :meth:`point_weights`).

        The campaign's MSE (and its variance normaliser) for this target are taken here, where the
        fit is done, so a shell outside the R range that the paths do not model adds nothing to every
        candidate's objective alike. The transform is the fit's (window, ``dk``, k range) on the
        target's grid, with the simulator's k-weight; Larch's R-factor (the goodness) uses the data's
        whole χ(k) and the fit's k-weight(s).
        """
        if self.spec.space != "r":
            return None
        r, chir = xftf(
            self.target.x, np.asarray(values, dtype=float), rmax=self.spec.rmax + 0.5, kmin=self.kmin,
            kmax=self.kmax, dk=self.spec.dk, window=self.spec.window, kstep=self._kstep,
        )  # fmt: skip
        sel = (r >= self.spec.rmin - 1e-9) & (r <= self.spec.rmax + 1e-9)
        return np.concatenate([chir.real[sel], chir.imag[sel]])

    def mse_of(self, values: np.ndarray) -> float:
        """The campaign's MSE of fitted ``values`` against the target: in R space (:meth:`fit_space`)
        or, in k and q space, weighted by the window squared."""
        own = self.fit_space(values)
        if own is None:
            return self.weighted_mse(values)
        data = self.fit_space(self.target.y)
        assert data is not None
        return float(np.mean((own - data) ** 2))

    # -- the Larch model ------------------------------------------------------------------------------
    def _params(self, paths: list[FeffPath], fixed: Mapping[str, float]) -> tuple[Any, dict[str, str]]:
        """Larch's parameter group and each path's σ² expression (by label)."""
        from larch.fitting import param, param_group

        def par(key: str, start: float) -> Any:
            if key in fixed:
                return param(float(fixed[key]), vary=False)
            if key in self.spec.refine:
                lo, hi = self.bounds_of(key, FEFFIT_BOUNDS[key])
                return param(min(max(start, lo), hi), vary=True, min=lo, max=hi)
            return param(start, vary=False)

        pars: dict[str, Any] = {
            "amp": par("s02", 1.0),
            "del_e0": par("e0", 0.0),
            "expansion": par("expansion", 0.0),
            "third": par("third", 0.0),
            "temp": param(self.temperature, vary=False),
        }
        model = self.spec.sigma2_model
        sig: dict[str, str] = {}
        if "sigma2" not in self.spec.refine or model in ("debye", "einstein"):
            lo, hi = (
                self.bounds_of("sigma2", FEFFIT_BOUNDS["theta"]) if model in ("debye", "einstein") else (0, 0)
            )
            vary = "sigma2" in self.spec.refine
            pars["theta"] = param(self.theta, vary=vary, **({"min": lo, "max": hi} if vary else {}))
            fn = "sigma2_eins" if model == "einstein" else "sigma2_debye"
            sig = {p.label: f"{fn}(temp, theta)" for p in paths}
        elif model == "shell":
            of = shells(paths, self.spec.shell_gap)
            for n in sorted(set(of.values())):
                pars[f"sigma2_{n}"] = par("sigma2", 0.003)
            sig = {label: f"sigma2_{n}" for label, n in of.items()}
        else:
            pars["sigma2"] = par("sigma2", 0.003)
            sig = {p.label: "sigma2" for p in paths}
        return param_group(**pars), sig

    def fit(
        self, spectrum: Spectrum, structure: Structure | None = None, fixed: Mapping[str, float] | None = None
    ) -> FitResult:
        from larch import Group
        from larch.xafs import feffit, feffit_dataset, feffit_transform

        from aso_workflows.spectra.xraylarch import quiet

        fixed = self.check_fixed(fixed)
        paths = paths_of(spectrum.extra)
        if not paths:
            raise InputError(
                "fit.model",
                "the candidate's EXAFS spectrum holds no FEFF paths (simulate with settings.keep_paths: true)",
            )
        n_sites = len({p.site for p in paths})
        params, sig = self._params(paths, fixed)
        larch_paths = {
            p.label: p.larch_path(
                degen=p.degen / n_sites,
                s02="amp",
                e0="del_e0",
                deltar="expansion*reff",
                sigma2=sig[p.label],
                third="third",
            )
            for p in paths
        }
        kw = self.fit_kweights[0] if len(self.fit_kweights) == 1 else self.fit_kweights
        trans = feffit_transform(
            kmin=self.kmin, kmax=self.kmax, kweight=kw, dk=self.spec.dk, window=self.spec.window,
            rmin=self.spec.rmin, rmax=self.spec.rmax, fitspace=self.spec.space,
        )  # fmt: skip
        data = Group(k=self.data_k.copy(), chi=self.data_chi.copy())
        if self.data_dchi is not None:  # AUTOBK's uncertainty: feffit adds it to its noise estimate
            data.delta_chi = self.data_dchi.copy()
        try:
            with quiet(), warnings.catch_warnings():
                # uncertainties warns about fixed parameters (std 0) while Larch propagates errors
                warnings.simplefilter("ignore", UserWarning)
                dset = feffit_dataset(data=data, paths=larch_paths, transform=trans)
                out = feffit(params, dset, max_nfev=self.spec.max_nfev)
        except (ValueError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError) as exc:
            raise SimulationError(f"Larch's feffit failed on the candidate: {exc}") from None
        if out is None:
            raise SimulationError("Larch's feffit returned no result")
        return self._result(spectrum, paths, dset.paths, dset, out, n_sites)  # the dataset's copies hold χ

    def _result(
        self,
        spectrum: Spectrum,
        paths: list[FeffPath],
        larch_paths: dict[str, Any],
        dset: Any,
        out: Any,
        n_sites: int,
    ) -> FitResult:
        k = self.target.x
        model_k = np.asarray(dset.model.k, dtype=float)
        values = np.interp(k, model_k, np.asarray(dset.model.chi, dtype=float)) * k**self.kweight
        names = {"amp": "s02", "del_e0": "e0", "expansion": "expansion", "theta": "theta", "third": "third"}
        params: dict[str, float] = {}
        errors: dict[str, float] = {}
        for pname, par in out.params.items():
            name = names.get(pname, pname if pname.startswith("sigma2") else None)
            if name is None or not par.vary:
                continue
            params[name] = float(par.value)
            if par.stderr is not None and np.isfinite(par.stderr):
                errors[name] = float(par.stderr)
        alpha = float(out.params["expansion"].value)
        shell1 = first_shell(paths)
        first = (
            sum(p.degen * p.reff for p in shell1) / sum(p.degen for p in shell1) if shell1 else float("nan")
        )
        stats = {
            "chi2_reduced": float(out.chi2_reduced),
            "chi_square": float(out.chi_square),
            "n_independent": float(out.n_independent),
            "n_varys": float(out.nvarys),
            "nfev": float(out.nfev),
            "first_shell_r": first * (1.0 + alpha),
            "expansion": alpha,
        }
        update: dict[str, Any] = {"values": values.tolist()}
        if spectrum.site_values is not None and spectrum.absorber_sites:
            per_site = []
            for site in spectrum.absorber_sites:
                chi = sum(
                    (np.asarray(larch_paths[p.label].chi, dtype=float) for p in paths if p.site == site),
                    start=np.zeros_like(model_k),
                )
                per_site.append((np.interp(k, model_k, chi * n_sites) * k**self.kweight).tolist())
            update["site_values"] = per_site
        extra = {key: v for key, v in spectrum.extra.items() if key != "feff_paths"}
        extra["nuisance_fit"] = params
        if hasattr(self.simulator, "chir"):
            extra.update(self.simulator.chir(values))
        update["extra"] = extra
        return FitResult(
            technique="exafs",
            parameters=params,
            uncertainties=errors,
            statistics=stats,
            goodness_name="R",
            goodness=float(out.rfactor),
            mse=self.mse_of(values),
            n_simulations=0,
            status="fixed" if not self.spec.refine else ("converged" if out.success else "stopped"),
            spectrum=spectrum.model_copy(update=update),
        )
