"""Fitter registry: a technique and its ``fit`` declaration → a configured :class:`NuisanceFitter`."""

from __future__ import annotations

import importlib

from aso_workflows.errors import InputError
from aso_workflows.spectra.base import Simulator
from aso_workflows.spectra.fit.base import NuisanceFitter
from aso_workflows.spectra.fit.spec import FitSpec
from aso_workflows.spectra.spectrum import Spectrum

__all__ = ["FITTERS", "fitter_class", "make_fitter"]

FITTERS: dict[str, tuple[str, str]] = {
    "pdf": ("aso_workflows.spectra.fit.pdf", "PDFFitter"),
    "exafs": ("aso_workflows.spectra.fit.exafs", "EXAFSFitter"),
    "xanes": ("aso_workflows.spectra.fit.xanes", "XANESFitter"),
}


MODELS: dict[tuple[str, str], tuple[str, str]] = {
    ("exafs", "paths"): ("aso_workflows.spectra.fit.feffit", "FeffitFitter"),
}
"""Fitters chosen by a target's ``fit.model`` instead of the technique's default (FEFFIT-grade EXAFS)."""


def fitter_class(technique: str, model: str | None = None) -> type[NuisanceFitter]:
    """The fitter class of a technique (and ``fit.model``), imported on first use."""
    if technique not in FITTERS:
        raise InputError("technique", f"no nuisance fit for {technique!r}; expected one of {list(FITTERS)}")
    module, name = MODELS.get((technique, model or ""), FITTERS[technique])
    return getattr(importlib.import_module(module), name)


def make_fitter(
    technique: str, spec: FitSpec | list | dict | None, target: Spectrum, simulator: Simulator
) -> NuisanceFitter:
    """A fitter for one target.

    Parameters
    ----------
    technique
        ``"pdf"``, ``"exafs"`` or ``"xanes"``.
    spec
        The target's ``fit`` (a :class:`FitSpec`, its short list form, a mapping, or ``None`` for
        nothing refined: the fitter then only scores).
    target
        The target spectrum on the simulator's grid.
    simulator
        The technique's simulator.

    Raises
    ------
    InputError
        One line naming the ``fit`` field: unknown parameter or option, bad bounds, a window outside
        the grid, ``weights: dG`` without uncertainties in the file.
    """
    if not isinstance(spec, FitSpec):
        from pydantic import ValidationError

        try:
            spec = FitSpec.model_validate(spec)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise InputError(
                f"fit.{loc}" if loc else "fit", err["msg"].removeprefix("Value error, ")
            ) from None
    if spec.model != "chi" and (technique, spec.model) not in MODELS:
        raise InputError("fit.model", f"{spec.model!r} is not a {technique} fit model")
    return fitter_class(technique, spec.model)(spec, target, simulator)
