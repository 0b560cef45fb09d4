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
normaliser alike, so the objective is what the fit minimised. Every term also reports the goodness of
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

    def _variance(self) -> float:
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
        w = self.point_weights
        if w is None:
            return mse(y, self.target.y)
        return float(np.sum(w * (y - self.target.y) ** 2) / np.sum(w))

    def value(self, spectrum: Spectrum) -> float:
        """This term's contribution: ``weight · MSE / normaliser``."""
        return self.weight * self.mse(spectrum) / self.normaliser

    def fit(
        self, spectrum: Spectrum, structure: Structure | None = None, start: dict | None = None
    ) -> FitResult:
        """The candidate's spectrum fitted to the target (or only scored when there is no fitter);
        ``start``: values to start the fit from (fitters that take them: PDF)."""
        if self.fitter is not None:
            if start:
                return self.fitter.fit(spectrum, structure, start=start)
            return self.fitter.fit(spectrum, structure)
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
        total = sum(t.weight * fits[t.technique].mse / t.normaliser for t in self.terms)
        return float(total), fits
