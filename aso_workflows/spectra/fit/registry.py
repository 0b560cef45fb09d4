"""Fitters by technique: a technique and its ``fit`` declaration → a configured :class:`NuisanceFitter`.

Which class fits a technique is its entry's ``fitter`` in the technique registry
(:mod:`aso_workflows.spectra.techniques`), imported on first use.
"""

from __future__ import annotations

from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.spectra.base import Simulator
from aso_workflows.spectra.fit.base import NuisanceFitter
from aso_workflows.spectra.fit.spec import FitSpec
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.spectra.techniques import get_technique, load_ref, technique_entries

__all__ = ["fitter_class", "make_fitter"]


def fitter_class(technique: str, model: str | None = None) -> type[NuisanceFitter]:
    """The fitter class of a technique, or of one of its ``fit.model`` s (imported on first use).

    Raises
    ------
    InputError
        On field ``technique``: unknown, or a technique without a nuisance fit; on ``fit.model``: a
        model the technique does not have.
    """
    entry = get_technique(technique)
    if model is not None:
        if model not in entry.fit_models:
            expected = sorted(entry.fit_models) or "none (leave fit.model out)"
            raise InputError("fit.model", f"{model!r} is not a {technique} fit model; expected {expected}")
        chosen: type[NuisanceFitter] = load_ref(entry.fit_models[model])
        return chosen
    if entry.fitter is None:
        fitted = [e.name for e in technique_entries() if e.fitter is not None]
        raise InputError("technique", f"no nuisance fit for {technique!r}; expected one of {fitted}")
    cls: type[NuisanceFitter] = load_ref(entry.fitter)
    return cls


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
        A registered technique with a fitter (``"pdf"``, ``"exafs"``, ``"xanes"`` ...).
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
    cls = fitter_class(technique, spec.model)
    if technique == "pdf":  # the PDF fit takes its symmetry from the campaign's start
        return cls(spec, target, simulator, reference=reference)  # type: ignore[call-arg]
    return cls(spec, target, simulator)
