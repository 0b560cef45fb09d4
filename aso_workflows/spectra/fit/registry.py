"""Fitter registry: a technique and its ``fit`` declaration → a configured :class:`NuisanceFitter`."""

from __future__ import annotations

import importlib

from pymatgen.core import Structure

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


def fitter_class(technique: str) -> type[NuisanceFitter]:
    """The fitter class of a technique (imported on first use)."""
    if technique not in FITTERS:
        raise InputError("technique", f"no nuisance fit for {technique!r}; expected one of {list(FITTERS)}")
    module, name = FITTERS[technique]
    return getattr(importlib.import_module(module), name)


def make_fitter(
    technique: str,
    spec: FitSpec | list | dict | None,
    target: Spectrum,
    simulator: Simulator,
    reference: Structure | None = None,
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
    reference
        The campaign's start structure (the PDF fit takes its ``symmetry`` from it).

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
    cls = fitter_class(technique)
    if technique == "pdf":
        return cls(spec, target, simulator, reference=reference)  # type: ignore[call-arg]
    return cls(spec, target, simulator)
