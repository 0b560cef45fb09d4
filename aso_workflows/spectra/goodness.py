"""Goodness of fit as the field quotes it: PDFgui's Rw for PDF, FEFFIT's R-factor for XAS.

Both are reported next to the campaign's MSE objective; neither replaces it.

* **Rw** (PDFgui, pdffit2): ``Rw = sqrt( Σ w (G_obs − G_calc)² / Σ w G_obs² )`` over the fit range,
  with ``w = 1/σ²`` when the data carry uncertainties dG and the user asked for them, else ``w = 1``.
  A good fit of a crystalline X-ray PDF reaches Rw ≈ 0.05–0.15; 0.2–0.3 means a right structure with
  something missing; above ~0.4 the model is wrong.
* **R** (FEFFIT/Larch ``feffit``): ``R = Σ |χ_data − χ_model|² / Σ |χ_data|²`` in the space the fit
  is done in (windowed k-weighted χ(k), or complex χ(R) over the R range; real and imaginary parts
  both count). A good EXAFS fit has R < 0.02; R ≈ 0.05 is acceptable. The same ratio is reported for
  XANES over its fit range.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["rw", "r_factor"]

# Which technique reports which figure is its entry's ``goodness`` (aso_workflows.spectra.techniques).


def rw(observed: ArrayLike, calculated: ArrayLike, weights: ArrayLike | None = None) -> float:
    """PDFgui's weighted residual ``sqrt(Σ w (o − c)² / Σ w o²)``.

    Parameters
    ----------
    observed, calculated
        Equally long sequences (the data and the model on the same points).
    weights
        Per-point weights (``1/dG²``), or ``None`` for 1.

    Raises
    ------
    ValueError
        Different lengths, negative weights, or data that are zero everywhere they are weighted.
    """
    o = np.asarray(observed, dtype=float)
    c = np.asarray(calculated, dtype=float)
    if o.shape != c.shape:
        raise ValueError(f"cannot compare {o.shape} observed with {c.shape} calculated points")
    w = np.ones_like(o) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != o.shape or np.any(w < 0):
        raise ValueError("weights must be ≥ 0, one per point")
    den = float(np.sum(w * o**2))
    if den <= 0:
        raise ValueError("Rw is undefined: the observed data are zero wherever they are weighted")
    return float(np.sqrt(np.sum(w * (o - c) ** 2) / den))


def r_factor(observed: ArrayLike, calculated: ArrayLike) -> float:
    """FEFFIT's ``Σ |o − c|² / Σ |o|²`` (complex values allowed: χ(R) real and imaginary parts).

    Raises
    ------
    ValueError
        Different lengths, or data that are zero everywhere.
    """
    o = np.asarray(observed)
    c = np.asarray(calculated)
    if o.shape != c.shape:
        raise ValueError(f"cannot compare {o.shape} observed with {c.shape} calculated points")
    den = float(np.sum(np.abs(o) ** 2))
    if den <= 0:
        raise ValueError("R is undefined: the data are zero over the fit range")
    return float(np.sum(np.abs(o - c) ** 2) / den)
