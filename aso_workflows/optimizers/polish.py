"""The exact finish of a campaign (``polish:``): the best structures refined by pdffit2.

Any campaign with a PDF target, whatever its optimiser, can end with a polish: when the budget is
spent (or the target mismatch reached) the ``top`` best evaluated structures — and the start, so that
the answer is never worse than the refinement a PDFgui user would run from the same start — are each
refined against the PDF target by pdffit2 (:class:`~aso_workflows.spectra.fit.pdffit.PdfFitProblem`):
positions (the free coordinates of the campaign's ``symmetry``, or of each structure's own space
group) together with the target's nuisance set (its ``fit.refine``: scale, Qdamp, the cell, ADPs
...), X-ray or neutron, minimum distances and restraints kept (a step that breaks one is shortened).
The refined structures are proposed as one more iteration of kind ``polish`` and evaluated like
every candidate (simulated, fitted — starting from the polish's own refined values — and scored), so
the campaign's best is the polished one when polishing helped.

Every PDF calculation is counted: each proposal stores the pdffit2 calculations its refinement took
in ``predicted.polish.pdf_calculations`` (the evaluation's own simulation and fit come on top, as for
every candidate), and :func:`~aso_workflows.optimizers.diffpy_refine.pdf_calculations` adds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from aso_workflows.settings import settings_dataclass

if TYPE_CHECKING:
    import numpy as np
    from pymatgen.core import Structure

    from aso_workflows.optimizers.base import CampaignView, CandidateProposal
    from aso_workflows.spectra.fit.pdffit import Refined

__all__ = ["Polish", "POLISH_KIND", "refine_pdf", "CELL_PARAMETERS"]

POLISH_KIND = "polish"
"""The kind of polish proposals and their evaluations."""

CELL_PARAMETERS = ("expansion", "a", "b", "c", "alpha", "beta", "gamma")
"""Refined values that live in the refined structure itself (not started from again by a fit)."""


@settings_dataclass
class Polish:
    """The campaign file's ``polish:`` (module docstring).

    Attributes
    ----------
    top
        Best distinct evaluated structures refined.
    include_start
        Also refine the start structure (the refinement a user would run: the campaign's answer is then
        never worse than it).
    max_calls
        pdffit2 PDF + derivative calculations each refinement may spend.
    positions
        Refine positions (else only the nuisance set).
    refine
        Nuisance parameters refined with the positions; ``None``: the PDF target's ``fit.refine``.
    """

    top: Annotated[int, Field(ge=0)] = 3
    include_start: bool = True
    max_calls: Annotated[int, Field(ge=8)] = 120
    positions: bool = True
    refine: list[str] | None = None

    def proposals(self, state: CampaignView) -> list[CandidateProposal]:
        """The polished structures of a campaign (its evaluations read from the store)."""
        from pymatgen.core import Structure

        from aso_workflows.optimizers.base import CandidateProposal
        from aso_workflows.structures import structure_fingerprint

        done = state.evaluations("completed")
        ranked = sorted(done, key=lambda e: e["objective"])
        chosen: list[tuple[str, Structure]] = []
        seen: set[str] = set()
        if self.include_start:
            start = next((e for e in done if e.get("kind") == "start"), None)
            if start is not None:
                chosen.append(("start", Structure.from_dict(start["structure"])))
                seen.add(start["fingerprint"])
        for e in ranked:
            if sum(1 for origin, _ in chosen if origin != "start") >= self.top:
                break
            if e["fingerprint"] not in seen:
                seen.add(e["fingerprint"])
                chosen.append((str(e["_id"]), Structure.from_dict(e["structure"])))
        out: list[CandidateProposal] = []
        known = {e["fingerprint"] for e in done}
        for origin, structure in chosen:
            refined = refine_pdf(state, structure, self.refine, self.max_calls, self.positions)
            new = refined.structure
            if structure_fingerprint(new) in known:
                continue  # nothing moved: the evaluation exists already
            known.add(structure_fingerprint(new))
            out.append(
                CandidateProposal(
                    structure=new,
                    predicted={"polish": polish_record(refined, origin)},
                    note=f"polish of {origin}: pdffit2, {refined.calls} PDF calculation(s), Rw {refined.rw:.4f}",
                    kind=POLISH_KIND,
                )
            )
        return out


def polish_record(refined: Refined, origin: str) -> dict:
    """What a polish proposal stores in ``predicted.polish``."""
    return {
        "origin": origin,
        "pdf_calculations": int(refined.calls),
        "n_parameters": len(refined.values),
        "rw": float(refined.rw),
        "status": refined.status,
        "parameters": dict(refined.values),
        "uncertainties": dict(refined.sigmas),
        "at_bound": list(refined.at_bound),
    }


def refine_pdf(
    state: CampaignView,
    structure: Structure,
    refine: list[str] | None,
    max_calls: int,
    positions: bool = True,
) -> Refined:
    """Refine ``structure`` against the campaign's PDF target: positions (``positions``) and the
    nuisance set ``refine`` (default: the PDF target's ``fit.refine``), minimum distances and
    restraints kept.

    Raises
    ------
    InputError
        The campaign has no PDF target.
    """
    import numpy as np

    from aso_workflows.errors import InputError
    from aso_workflows.spectra.fit.pdffit import PdfFitProblem, Plan
    from aso_workflows.spectra.pdf import PDFSimulator

    if "pdf" not in state.simulators:
        raise InputError("polish", "refines against a PDF target; the campaign has none")
    sim = state.simulators["pdf"]
    assert isinstance(sim, PDFSimulator)  # the registry's simulator of technique "pdf"
    term = next(t for t in state.objective.terms if t.technique == "pdf")
    spec = getattr(term.fitter, "spec", None)
    names = list(refine if refine is not None else (spec.refine if spec is not None else []))
    weights = spec is not None and spec.weights == "dG"
    target = state.targets["pdf"]
    dy = np.asarray(target.extra["dy"], dtype=float) if weights else None
    from aso_workflows.optimizers.constraint import campaign_restraints, campaign_symmetry

    symmetry = campaign_symmetry(state)
    restraints = campaign_restraints(state)
    dmin = state.dmin_matrix

    def geometry_ok(s: Structure) -> bool:
        return _keeps_distances(s, dmin) and (restraints is None or restraints.ok(s))

    problem = PdfFitProblem(
        symmetry.symmetrised(structure) if symmetry is not None else structure,
        sim,
        target.y,
        dy,
        Plan.from_names(names, positions=positions),
        symmetry=symmetry,
        bounds=spec.bounds if spec is not None else {},
        fixed={},
        geometry_ok=geometry_ok,
    )
    return problem.refine(max_calls)


def _keeps_distances(structure: Structure, dmin: np.ndarray) -> bool:
    import torch

    from aso_workflows.optimizers.sampling import violations

    pos = torch.tensor(structure.cart_coords)[None]
    lat = torch.tensor(structure.lattice.matrix)[None]
    return not bool(violations(pos, lat, dmin)[0])
