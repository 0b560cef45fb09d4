"""Nuisance parameters fitted per evaluation: scale, resolution, thermal, S0², E0, energy shift.

- :mod:`~aso_workflows.spectra.fit.spec`: :class:`FitSpec`, the ``fit:`` of a campaign target;
- :mod:`~aso_workflows.spectra.fit.base`: :class:`NuisanceFitter`, :class:`FitResult`, the shared
  closed-form + bounded least squares;
- :mod:`~aso_workflows.spectra.fit.pdf`, :mod:`~.exafs`, :mod:`~.xanes`: one fitter per technique;
- :mod:`~aso_workflows.spectra.fit.registry`: :func:`make_fitter`.
"""

from __future__ import annotations

from aso_workflows.spectra.fit.base import FitResult, NuisanceFitter
from aso_workflows.spectra.fit.registry import fitter_class, make_fitter
from aso_workflows.spectra.fit.spec import FitSpec

__all__ = ["FitResult", "FitSpec", "NuisanceFitter", "fitter_class", "make_fitter"]
