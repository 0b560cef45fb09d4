"""The campaign's surrogate for one technique: which level, which readout range, which per-site rows.

One place for the choices that depend on the technique, used by the training job and the benchmarks;
they are read from the technique's entry (:class:`~aso_workflows.spectra.techniques.SurrogateNeeds`):

* PDF: level ``settings.pdf_level`` (node: per-atom contributions G_i(r), see
  :mod:`~aso_workflows.spectra.pdf_partials`; graph: G(r) per structure), and a readout that reaches
  the target's ``rmax`` + :data:`PDF_READOUT_MARGIN` (unless ``readout_cutoff`` is set), so every pair
  distance that shapes G(r) on the target's grid is seen.
* XAS (EXAFS, XANES): node level on the absorber's sites, readout on the message-passing basis.

This module imports no torch until a surrogate is built.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aso_workflows.spectra.spectrum import Grid
from aso_workflows.spectra.techniques import get_technique
from aso_workflows.surrogate.settings import SurrogateLevel, SurrogateSettings

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator
    from aso_workflows.surrogate.base import Surrogate
    from aso_workflows.surrogate.ensemble import EnsembleSurrogate

logger = logging.getLogger(__name__)

__all__ = [
    "PDF_READOUT_MARGIN",
    "surrogate_level",
    "needs_site_rows",
    "uses_prior",
    "surrogate_settings",
    "surrogate_for_target",
]

#: Å beyond the PDF's ``rmax`` that the readout covers: a pair at distance d shapes G(r) over ±5σ
#: (σ = 0.23 Å for the reference's Biso = 2) plus the Qmax termination ripples.
PDF_READOUT_MARGIN: float = get_technique("pdf").surrogate.readout_margin or 0.0


def surrogate_level(technique: str, settings: SurrogateSettings) -> SurrogateLevel:
    """``"node"`` or ``"graph"``: what the surrogate of ``technique`` learns (its entry's level, or the
    setting its entry names: PDF ``pdf_level``)."""
    needs = get_technique(technique).surrogate
    level: SurrogateLevel = getattr(settings, needs.level_setting) if needs.level_setting else needs.level
    return level


def uses_prior(technique: str, settings: SurrogateSettings, engine: str | None = None) -> bool:
    """Whether the surrogate of ``technique`` is a physics prior + residual: ``settings.prior`` and a prior
    exists (:mod:`~aso_workflows.surrogate.priors`: the PDF from pdffit2 — ``engine`` as a spectrum
    records it, e.g. ``diffpy.pdffit2 1.5.0``, when known — and EXAFS from FEFF's paths)."""
    if not settings.prior or technique not in ("pdf", "exafs"):
        return False
    return technique != "pdf" or engine is None or "pdffit2" in engine


def needs_site_rows(technique: str, settings: SurrogateSettings) -> bool:
    """Whether evaluations must carry per-site rows for this technique beyond what its simulator gives.

    True for a node-level surrogate of a technique whose entry names a ``site_rows`` function, unless
    the surrogate uses the technique's physics prior: a PDF evaluation then also computes the per-atom
    contributions (:func:`~aso_workflows.spectra.pdf_partials.simulate_with_sites`, ~2.4 G(r)
    calculations more). With the prior the residual is learned per structure (the prior has its own
    per-atom rows), so a PDF evaluation stays one G(r). XAS simulators produce their per-absorber rows
    anyway.
    """
    needs = get_technique(technique).surrogate
    return (
        needs.site_rows is not None
        and surrogate_level(technique, settings) == "node"
        and not uses_prior(technique, settings)
    )


def surrogate_settings(technique: str, grid: Grid, settings: SurrogateSettings) -> SurrogateSettings:
    """``settings`` with the readout range resolved for ``technique`` on ``grid``."""
    margin = get_technique(technique).surrogate.readout_margin
    if margin is not None and settings.readout_cutoff is None:
        r_max = float(max(grid.values))
        return dataclasses.replace(settings, readout_cutoff=round(r_max + margin, 6))
    return settings


def surrogate_for_target(
    technique: str,
    grid: Grid,
    species: Sequence[str],
    settings: SurrogateSettings,
    absorber: str | None = None,
    simulator: Simulator | None = None,
) -> Surrogate:
    """A fresh (untrained) surrogate for ``technique`` on the target's ``grid``.

    Parameters
    ----------
    technique
        A registered technique (``"pdf"``, ``"exafs"``, ``"xanes"`` ...).
    grid
        The target's grid (the surrogate predicts on it; a PDF's ``rmax`` sets the readout range).
    species
        Element of every site, in the campaign's site order.
    settings
        The campaign's surrogate settings.
    absorber
        Absorbing element (XAS).
    simulator
        The campaign's simulator of ``technique``: with it and ``settings.prior``, the surrogate is its
        physics prior + the GNN ensemble on the residual
        (:class:`~aso_workflows.surrogate.residual.PriorResidualSurrogate`) where a prior exists.
    """
    from aso_workflows.surrogate.ensemble import EnsembleSurrogate

    def ensemble() -> EnsembleSurrogate:
        return EnsembleSurrogate(
            species=species,
            output_dim=len(grid.values),
            level=surrogate_level(technique, settings),
            absorber=absorber if get_technique(technique).absorber else None,
            settings=surrogate_settings(technique, grid, settings),
        )

    if settings.prior and simulator is not None:
        from aso_workflows.surrogate.priors import prior_for
        from aso_workflows.surrogate.residual import PriorResidualSurrogate

        prior, why = prior_for(technique, simulator, species, grid.values)
        if prior is not None:
            return PriorResidualSurrogate(prior, ensemble() if settings.residual else None, settings)
        logger.info("surrogate of %s: no physics prior (%s)", technique, why)
    return ensemble()
