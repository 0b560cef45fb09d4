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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Grid, Spectrum

__all__ = ["mse", "same_grid", "TechniqueTerm", "Objective"]


def mse(a, b) -> float:
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


def same_grid(a: Grid, b: Grid) -> bool:
    """True if both grids have the same points (to 1e-9 relative): no interpolation needed."""
    x, y = a.array, b.array
    if x.shape != y.shape:
        return False
    return bool(np.allclose(x, y, rtol=1e-9, atol=1e-12))


@dataclass
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
    """

    technique: str
    target: Spectrum
    weight: float = 1.0
    normalisation: str | float = "variance"

    def __post_init__(self) -> None:
        try:
            weight = float(self.weight)
        except (TypeError, ValueError):
            weight = float("nan")
        if not (np.isfinite(weight) and weight > 0):
            raise InputError(f"{self.technique}.weight", f"expected a positive number, got {self.weight!r}")
        self.weight = weight
        if isinstance(self.normalisation, str):
            if self.normalisation not in ("variance", "none"):
                raise InputError(
                    f"{self.technique}.normalisation",
                    f"expected 'variance', 'none' or a positive number, got {self.normalisation!r}",
                )
        else:
            try:
                ok = bool(np.isfinite(float(self.normalisation)) and float(self.normalisation) > 0)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(
                    f"{self.technique}.normalisation",
                    f"expected 'variance', 'none' or a positive number, got {self.normalisation!r}",
                )
        if self.normalisation == "variance" and float(np.var(self.target.y)) == 0.0:
            raise InputError(
                f"{self.technique}.normalisation",
                "the target is constant (zero variance); use normalisation 'none' or a number",
            )

    @property
    def normaliser(self) -> float:
        """The number the MSE is divided by."""
        if self.normalisation == "variance":
            return float(np.var(self.target.y))
        if self.normalisation == "none":
            return 1.0
        return float(self.normalisation)

    def on_target_grid(self, spectrum: Spectrum) -> Spectrum:
        """``spectrum`` on the target's grid (unchanged when the grids are the same)."""
        if same_grid(spectrum.grid, self.target.grid):
            return spectrum
        try:
            return spectrum.interpolate(self.target.grid)
        except ValueError as exc:
            raise InputError(f"{self.technique} spectrum", str(exc)) from None

    def mse(self, spectrum: Spectrum) -> float:
        """Raw MSE of ``spectrum`` against the target, on the target grid."""
        return mse(self.on_target_grid(spectrum).y, self.target.y)

    def value(self, spectrum: Spectrum) -> float:
        """This term's contribution: ``weight · MSE / normaliser``."""
        return self.weight * self.mse(spectrum) / self.normaliser


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
