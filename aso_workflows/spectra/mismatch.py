"""Mismatch between simulated and target spectra: MSE per technique and a weighted, normalised sum.

Normalisation
-------------
G(r), k^w·χ(k) and normalised μ(E) have different units and magnitudes, so raw MSEs of different
techniques cannot be added meaningfully. With ``normalisation="variance"`` (the default) each
technique's MSE is divided by the variance of its target values, i.e. the term is

    weight · MSE(S, S*) / Var(S*)

which is 1 for a spectrum that is a flat line at the target's mean, 0 for a perfect match, and
dimensionless, so a PDF and an EXAFS term can be summed with weights that mean what they say.
``"none"`` keeps the raw MSE (the reference's single-technique objective); a number divides the MSE
by that number (a fixed scale chosen by the user).

Nuisance fits and goodness of fit
---------------------------------
A term may carry a :class:`~aso_workflows.spectra.fit.base.NuisanceFitter` (the target's ``fit:``).
:meth:`Objective.evaluate_fitted` then fits each candidate's simulation to the target first (scale,
resolution, thermal parameters, S0², E0 ...) and scores the *fitted* spectrum; the fitter's point
weights (1/dG², an EXAFS k window, a XANES energy range) weight the MSE and the variance
normaliser alike, so the objective is what the fit minimised; a fitter that compares in a space of its
own (``fit_space``: the FEFFIT-grade EXAFS fit in R space) has the MSE and the variance taken there.
Every term also reports the goodness of
fit the field quotes (PDFgui's Rw, FEFFIT's R; :mod:`~aso_workflows.spectra.goodness`).
:meth:`Objective.evaluate` compares spectra as they are: the surrogate's predictions, which are
already in the fitted space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field, model_validator

from aso_workflows.errors import InputError
from aso_workflows.settings import settings_dataclass
from aso_workflows.spectra.fit.base import FitResult
from aso_workflows.spectra.spectrum import Spectrum, on_target_grid, same_grid
from aso_workflows.spectra.techniques import get_technique

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["mse", "TechniqueTerm", "Objective"]


def mse(a: Spectrum | ArrayLike, b: Spectrum | ArrayLike) -> float:
    """Mean squared error of two equally long sequences (or ``Spectrum`` objects on one grid).

    Raises
    ------
    ValueError
        If the lengths differ (or the spectra's grids differ: use :meth:`Objective.evaluate`, which
        interpolates).
    """
    if isinstance(a, Spectrum) and isinstance(b, Spectrum) and not same_grid(a.grid, b.grid):
        raise ValueError("spectra are on different grids; interpolate one onto the other first")
    ya = a.y if isinstance(a, Spectrum) else np.asarray(a, dtype=float)
    yb = b.y if isinstance(b, Spectrum) else np.asarray(b, dtype=float)
    if ya.shape != yb.shape:
        raise ValueError(f"cannot compare spectra of {ya.shape} and {yb.shape} points")
    return float(np.mean((ya - yb) ** 2))


@settings_dataclass
class TechniqueTerm:
    """One technique's contribution to the objective: ``weight · MSE / normaliser``.

    Parameters
    ----------
    technique
        ``"pdf"``, ``"exafs"`` or ``"xanes"``: the key of this technique's spectrum in
        :meth:`Objective.evaluate`.
    target
        The target spectrum; simulated spectra are compared on its grid.
    weight
        Relative weight (> 0).
    normalisation
        ``"variance"`` (divide by the variance of the target values), ``"none"``, or a positive
        number to divide by.
    fitter
        The target's nuisance fit, or ``None`` (spectra are compared as simulated, uniformly).
    """

    technique: str
    target: Spectrum
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    normalisation: Literal["variance", "none"] | Annotated[float, Field(gt=0, allow_inf_nan=False)] = (
        "variance"
    )
    fitter: Any = None  # a NuisanceFitter (any object with point_weights() and fit())

    @model_validator(mode="after")
    def _not_constant(self) -> TechniqueTerm:
        if self.normalisation == "variance" and self._variance() == 0.0:
            raise ValueError(
                f"{self.technique}.normalisation: the target is constant (zero variance); "
                "use normalisation 'none' or a number"
            )
        return self

    @property
    def point_weights(self) -> np.ndarray | None:
        """The fitter's per-point weights on the target grid (``None``: uniform)."""
        return None if self.fitter is None else self.fitter.point_weights()

    def _space(self, values: np.ndarray) -> np.ndarray | None:
        """``values`` (on the target grid) in the fitter's own comparison space, when it has one
        (FEFFIT-grade EXAFS in R space: real and imaginary χ(R) over the fit's R range)."""
        to_space = getattr(self.fitter, "fit_space", None)
        return None if to_space is None else to_space(values)

    def _variance(self) -> float:
        own = self._space(self.target.y)
        if own is not None:
            return float(np.var(own))
        w = self.point_weights
        if w is None:
            return float(np.var(self.target.y))
        mean = float(np.sum(w * self.target.y) / np.sum(w))
        return float(np.sum(w * (self.target.y - mean) ** 2) / np.sum(w))

    @property
    def normaliser(self) -> float:
        """The number the MSE is divided by (the variance is weighted like the MSE)."""
        if self.normalisation == "variance":
            return self._variance()
        if self.normalisation == "none":
            return 1.0
        return float(self.normalisation)

    def on_target_grid(self, spectrum: Spectrum) -> Spectrum:
        """``spectrum`` on the target's grid (:func:`~aso_workflows.spectra.spectrum.on_target_grid`)."""
        return on_target_grid(spectrum, self.target.grid)

    def mse(self, spectrum: Spectrum) -> float:
        """MSE of ``spectrum`` against the target on the target grid (weighted by the fitter's weights)."""
        y = self.on_target_grid(spectrum).y
        own, data = self._space(y), self._space(self.target.y)
        if own is not None and data is not None:
            return mse(own, data)
        w = self.point_weights
        if w is None:
            return mse(y, self.target.y)
        return float(np.sum(w * (y - self.target.y) ** 2) / np.sum(w))

    def value(self, spectrum: Spectrum) -> float:
        """This term's contribution: ``weight · MSE / normaliser``."""
        return self.weight * self.mse(spectrum) / self.normaliser

    def fit(
        self,
        spectrum: Spectrum,
        structure: Structure | None = None,
        start: dict | None = None,
        fixed: dict[str, float] | None = None,
    ) -> FitResult:
        """The candidate's spectrum fitted to the target (or only scored when there is no fitter);
        ``start``: values to start the fit from (fitters that take them: PDF); ``fixed``: shared
        parameters held at values fitted for several targets at once (:data:`SHARED_PARAMETERS`)."""
        if self.fitter is not None:
            kw: dict[str, Any] = {}
            if start:
                kw["start"] = start
            if fixed:
                kw["fixed"] = fixed
            return self.fitter.fit(spectrum, structure, **kw)
        on_grid = self.on_target_grid(spectrum)
        entry = get_technique(self.technique)
        return FitResult(
            technique=self.technique,
            goodness_name=entry.goodness,
            goodness=entry.goodness_function(self.target.y, on_grid.y),
            mse=self.mse(on_grid),
            spectrum=on_grid,
        )


@dataclass
class Objective:
    """The weighted sum of normalised per-technique MSEs (lower is better)."""

    terms: list[TechniqueTerm] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.terms:
            raise InputError("targets", "the objective needs at least one technique")
        names = [t.technique for t in self.terms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError("targets", f"technique(s) {dup} given more than once")

    @property
    def techniques(self) -> list[str]:
        return [t.technique for t in self.terms]

    def evaluate(self, spectra: dict[str, Spectrum]) -> tuple[float, dict[str, float]]:
        """Total objective and the raw MSE of each technique.

        Parameters
        ----------
        spectra
            One spectrum per technique of the objective (extra keys are ignored); each is
            interpolated onto its target's grid when the grids differ.
        """
        missing = [t for t in self.techniques if t not in spectra]
        if missing:
            raise InputError(
                "spectra", f"missing technique(s) {missing}; the objective needs {self.techniques}"
            )
        per = {t.technique: t.mse(spectra[t.technique]) for t in self.terms}
        total = sum(t.weight * per[t.technique] / t.normaliser for t in self.terms)
        return float(total), per

    def evaluate_fitted(
        self,
        spectra: dict[str, Spectrum],
        structure: Structure | None = None,
        starts: dict[str, dict] | None = None,
    ) -> tuple[float, dict[str, FitResult]]:
        """Fit every technique's nuisance parameters, then the total objective of the fitted spectra.

        Parameters
        ----------
        spectra
            The candidate's simulated spectrum per technique.
        structure
            The candidate (needed by fits that re-simulate: PDF Qdamp, Biso, delta2 ...).
        starts
            Per technique, values its fit starts from (a polished candidate's refined nuisance values).

        Returns
        -------
        total, fits
            The objective (as :meth:`evaluate` of the fitted spectra) and one
            :class:`~aso_workflows.spectra.fit.base.FitResult` per technique: fitted values, fitted
            spectrum, weighted MSE and Rw/R.
        """
        missing = [t for t in self.techniques if t not in spectra]
        if missing:
            raise InputError(
                "spectra", f"missing technique(s) {missing}; the objective needs {self.techniques}"
            )
        starts = starts or {}
        fits = {
            t.technique: t.fit(spectra[t.technique], structure, starts.get(t.technique)) for t in self.terms
        }
        for name, terms in self.shared_parameters().items():
            fits.update(_joint_fit(name, terms, fits, spectra, structure, starts))
        total = sum(t.weight * fits[t.technique].mse / t.normaliser for t in self.terms)
        return float(total), fits

    def shared_parameters(self) -> dict[str, list[TechniqueTerm]]:
        """The :data:`SHARED_PARAMETERS` that several targets refine, and those targets: each is fitted
        once for all of them (one cell for a PDF and an EXAFS target)."""
        out = {}
        for name in SHARED_PARAMETERS:
            terms = [t for t in self.terms if t.fitter is not None and name in t.fitter.spec.refine]
            if len(terms) > 1:
                out[name] = terms
        return out


SHARED_PARAMETERS: tuple[str, ...] = ("expansion",)
"""Nuisance parameters that mean the same for every technique: ``expansion`` (α, every length of the
structure × (1 + α)). Refined by several targets of a campaign, one value is fitted for all of them."""


def _joint_fit(
    name: str,
    terms: list[TechniqueTerm],
    free: dict[str, FitResult],
    spectra: dict[str, Spectrum],
    structure: Structure | None,
    starts: dict[str, dict],
) -> dict[str, FitResult]:
    """The fits of ``terms`` with one value of the shared parameter ``name`` for all of them.

    The value minimises the terms' summed share of the objective, Σ weight · MSE / normaliser, each term
    refitting its other parameters at every trial value (bounded Brent search, as FEFFIT searches a
    single parameter). Each target's own fit of ``name`` (in ``free``) brackets the joint optimum: the
    search runs between the smallest and the largest of them, widened by 10 % (at least 1e-4) and
    kept inside every target's bounds. Each fit reports the joint value as its ``name`` and its own
    free value as ``statistics[name + "_alone"]``.
    """
    from scipy.optimize import minimize_scalar

    alone = {t.technique: float(free[t.technique].parameters.get(name, 0.0)) for t in terms}
    lo, hi = min(alone.values()), max(alone.values())
    pad = max(1e-4, 0.1 * (hi - lo))
    bounds = [
        t.fitter.bounds_of(name, (-np.inf, np.inf)) if hasattr(t.fitter, "bounds_of") else (-np.inf, np.inf)
        for t in terms
    ]
    lo = max([lo - pad] + [b[0] for b in bounds])
    hi = min([hi + pad] + [b[1] for b in bounds])
    cache: dict[float, tuple[float, dict[str, FitResult]]] = {}

    def share(value: float) -> float:
        key = round(float(value), 12)
        if key not in cache:
            fits = {
                t.technique: t.fit(
                    spectra[t.technique], structure, starts.get(t.technique), fixed={name: key}
                )
                for t in terms
            }
            cache[key] = (sum(t.weight * fits[t.technique].mse / t.normaliser for t in terms), fits)
        return cache[key][0]

    for v in alone.values():  # each target's own optimum is a candidate too
        share(min(max(v, lo), hi))
    if hi > lo:
        minimize_scalar(share, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5, "maxiter": 30})
    best = min(cache, key=lambda v: cache[v][0])
    out = {}
    for t in terms:
        fit = cache[best][1][t.technique]
        params = {**fit.parameters, name: best}
        stats = {**fit.statistics, f"{name}_alone": alone[t.technique]}
        spectrum = fit.spectrum.model_copy(update={"extra": {**fit.spectrum.extra, "nuisance_fit": params}})
        out[t.technique] = fit.model_copy(
            update={"parameters": params, "statistics": stats, "spectrum": spectrum}
        )
    return out
