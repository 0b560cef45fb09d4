"""Physics priors of the surrogate: cheap, differentiable models of a simulator, on which the GNN ensemble
learns only the residual (:mod:`~aso_workflows.surrogate.residual`, ``docs/surrogate.md``).

* ``pdf``: pdffit2's G(r) in torch, equal to the engine to ~1e-13 (:mod:`.pdf_model`, :mod:`.pdf_sum`,
  :mod:`.pdf`).
* ``exafs``: FEFF's scattering paths of a reference structure re-summed for the candidate's geometry
  (:mod:`.exafs`).

:func:`prior_for` gives the prior of a technique's simulator, or ``None`` with the reason when none
applies (XANES: no cheap model exists; a PDF from srreal: the model reproduces pdffit2). Importing this
package imports no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator
    from aso_workflows.surrogate.priors.base import PhysicsPrior

__all__ = ["prior_for", "prior_from_state", "PRIORS"]

#: prior kind → ``module:class``
PRIORS: dict[str, str] = {
    "pdf": "aso_workflows.surrogate.priors.pdf:PDFPrior",
    "exafs": "aso_workflows.surrogate.priors.exafs:EXAFSPrior",
}


def _cls(kind: str) -> Any:
    module, name = PRIORS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def prior_for(
    technique: str, simulator: Simulator, species: Sequence[str], grid: Sequence[float]
) -> tuple[PhysicsPrior | None, str]:
    """The physics prior of ``technique`` for a campaign, and why there is none when it is ``None``.

    Parameters
    ----------
    technique
        ``"pdf"``, ``"exafs"`` or ``"xanes"``.
    simulator
        The campaign's simulator of that technique (its settings are the prior's).
    species
        Element of every site, in the campaign's site order.
    grid
        The surrogate's grid (the target's).
    """
    if technique == "pdf":
        settings = simulator.settings_dict()
        if settings.get("engine") != "pdffit2":
            return (
                None,
                f"the PDF prior reproduces pdffit2; this campaign's engine is {settings.get('engine')!r}",
            )
        return _cls("pdf")(settings, list(species), list(grid)), ""
    if technique == "exafs":
        settings = simulator.settings_dict()
        if not settings.get("keep_paths"):
            return None, "the EXAFS prior needs FEFF's paths: the simulator's keep_paths is off"
        return _cls("exafs")(settings, list(species), list(grid)), ""
    if technique == "xanes":
        return None, "no cheap physics model of XANES: the GNN learns the whole spectrum"
    return None, f"no physics prior for {technique!r} in this version"


def prior_from_state(kind: str, state: dict[str, Any]) -> PhysicsPrior:
    """Rebuild a prior stored with a surrogate (:meth:`PhysicsPrior.state`)."""
    if kind not in PRIORS:
        from aso_workflows.errors import InputError

        raise InputError("prior", f"unknown prior {kind!r}; known: {sorted(PRIORS)}")
    return _cls(kind).from_state(state)
