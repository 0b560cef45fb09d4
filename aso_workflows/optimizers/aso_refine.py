"""ASO + refinement (``optimizer: aso-refine``): surrogate proposals polished by exact PDF refinement.

Beyond the paper. ActiveStructOpt's gradient proposals search globally through the surrogate, whose
error limits how close they get; pdffit2 has exact analytic derivatives of the PDF model the campaign
simulates, so a few Levenberg–Marquardt steps from a surrogate proposal reach the nearby minimum of the
real mismatch. Each iteration:

1. ActiveStructOpt proposes q candidates (same surrogate, acquisition and proposer settings as
   ``optimizer: aso``; fallbacks included, still stored as kind ``fallback``);
2. the ``top`` best of them by acquisition (all by default) are each refined against the target G(r)
   with :class:`~aso_workflows.optimizers.diffpy_refine.PdfFitRefiner` for at most ``max_calls`` pdffit2
   refine steps (positions; the lattice too with ``refine_lattice``); a step that would break a minimum
   distance is shortened (halved) as in the DiffPy baseline and ends that refinement;
3. the polished structures are simulated by the campaign like any other candidate.

Budget accounting
-----------------
Every pdffit2 call is a PDF calculation with derivatives (the first of a refinement two: it also
evaluates the starting point). The proposal stores them in ``predicted.refine.pdf_calculations``; the
campaign's own simulation of the polished structure is one more, so an aso-refine evaluation costs
``1 + pdf_calculations`` PDF calculations
(:func:`~aso_workflows.optimizers.diffpy_refine.pdf_calculations` counts it so, and the benchmark's
per-calculation view uses that count). Budgets compared per simulated structure hide this cost; compare
per PDF calculation.

Refinement where it pays
------------------------
Before the surrogate's proposals, the first candidate of an iteration is an exact refinement of the
campaign's best structure (first the start: the refinement a user would run), to convergence within
``best_max_calls`` (:func:`~aso_workflows.optimizers.polish.refine_pdf`: positions in the campaign's
``symmetry`` or the structure's own, the PDF target's nuisance set, minimum distances and restraints
kept) — as long as that best has not been refined yet. A refinement that moves nothing (converged, or
trapped on a symmetric structure) is recorded on the iteration's first proposal and the search takes
over: the best is refined again only when the search finds a better one. So refinement runs where it
pays (a near structure converges in one candidate, where the surrogate would need many) and the
search runs where refinement stalls (a trapped minimum). Its calculations are stored in
``predicted.refine_best.pdf_calculations`` and counted like the polish's.

Only the PDF term takes part in the refinement; with other targets too (EXAFS, XANES) the refinement
may worsen them, which the campaign's objective then shows.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, ClassVar

import numpy as np
from pydantic import Field
from pymatgen.core import Structure

from aso_workflows.optimizers.base import CandidateProposal, Optimizer, ProposalContext
from aso_workflows.optimizers.registry import register_optimizer
from aso_workflows.settings import settings_dataclass

if TYPE_CHECKING:
    from aso_workflows.optimizers.aso.proposal import Proposal
    from aso_workflows.spectra.pdf import PDFSimulator

__all__ = ["ASORefine", "refine_structure"]


def refine_structure(
    structure: Structure,
    target: np.ndarray,
    simulator: PDFSimulator,
    dmin: np.ndarray,
    max_calls: int,
    refine_lattice: bool = False,
) -> tuple[Structure, dict]:
    """Polish ``structure`` by pdffit2 refine steps against ``target``, at most ``max_calls`` PDF
    calculations in all.

    Each pdffit2 call is one PDF calculation with derivatives; the first call of a refinement is two (it
    also evaluates the starting point), so ``max_calls < 2`` leaves the structure as it is. A step that
    breaks a minimum distance is shortened (halved until valid, as the DiffPy baseline does) and the
    refinement goes on from there with a fresh pdffit2 instance (a first call again).

    Returns the structure reached (``structure`` itself if no step moved it) and what it cost:
    ``pdf_calculations``, ``steps`` (steps that moved it), ``rw`` (pdffit2's Rw at the last
    calculation), ``min_distance_halvings`` (in all), ``restarts`` (fresh instances after a shortened
    step), ``stopped`` (``"converged"``, ``"calls"`` or ``"min_distance"``: a step could not be shortened
    enough) and ``parameters`` (refined).
    """
    from aso_workflows.optimizers.diffpy_refine import DiffPyRefinement, PdfFitRefiner

    refiner = PdfFitRefiner(structure, target, simulator, refine_lattice)
    n_parameters = refiner.n_parameters
    current, spent, steps, halvings, restarts = structure, 0, 0, 0, 0
    rw = None
    stopped = "calls"
    while True:
        first = 1 if refiner.calls == 0 else 0  # the first call of an instance costs two
        invocations = max_calls - spent - first
        if invocations < 1:
            break
        new, calls = refiner.step(invocations)
        spent += calls
        rw = float(refiner.rw)
        if new is None:
            stopped = "converged" if spent < max_calls else "calls"
            break
        safe, halved = DiffPyRefinement._enforce_min_distances(new, current, dmin)
        if safe is None:
            stopped = "min_distance"
            break
        current, steps = safe, steps + 1
        if halved:
            halvings += halved
            restarts += 1
            refiner = PdfFitRefiner(safe, target, simulator, refine_lattice)  # go on from there
    info = {
        "pdf_calculations": int(spent),
        "steps": steps,
        "rw": rw,
        "min_distance_halvings": int(halvings),
        "restarts": restarts,
        "stopped": stopped,
        "parameters": int(n_parameters),
    }
    return current, info


@register_optimizer("aso-refine")
@settings_dataclass
class ASORefine(Optimizer):
    """ActiveStructOpt whose proposals are polished by a bounded pdffit2 refinement (PDF targets).

    See the module docstring.

    The surrogate, acquisition and proposer settings are those of ``optimizer: aso`` (``surrogate:``,
    ``acquisition:``, ``proposal:``); this class holds the refinement's, the campaign file's ``refine:``
    section.

    Attributes
    ----------
    max_calls
        PDF calculations the refinement of one proposal may spend (pdffit2 refine steps, each a PDF
        calculation with derivatives; the first of a refinement counts two). 0 turns the refinement off
        (then this is ``aso``). Measured on 8-atom NiO from structures at normalised mismatch 0.01–0.16:
        4 calculations lowered it ~1–5×, 8 ~10–100×, 16 to 1e-4–1e-7.
    top
        Refine the ``top`` proposals of a batch with the best acquisition (``None``: all q). One by
        default: counted per PDF calculation, one deep refinement of the most promising candidate costs
        less than a shallow one of each.
    refine_lattice
        Also refine a, b, c (the campaign keeps the lattice by default, as the reference does).
    refine_best
        Refine the start, then each new best structure, to convergence first (module docstring).
    best_max_calls
        PDF calculations one such refinement may spend.
    """

    max_calls: Annotated[int, Field(ge=0)] = 16
    top: Annotated[int, Field(ge=1)] | None = 1
    refine_lattice: bool = False
    refine_best: bool = True
    best_max_calls: Annotated[int, Field(ge=8)] = 60
    section: ClassVar[str | None] = "refine"
    needs_surrogate: ClassVar[bool] = True
    required_techniques: ClassVar[tuple[str, ...]] = ("pdf",)

    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        first, record = self._refine_best(ctx) if self.refine_best else (None, None)
        if first is not None and ctx.q == 1:
            return [first]
        if first is not None:  # the search keeps away from the refined candidate too
            ctx = dataclasses.replace(ctx, q=ctx.q - 1, pending=[*ctx.pending, first.structure])
        out = self._search(ctx)
        if first is not None:
            return [first, *out]
        if record is not None and out:
            out[0].predicted["refine_best"] = record  # a refinement that moved nothing: remembered, counted
        return out

    def _refine_best(self, ctx: ProposalContext) -> tuple[CandidateProposal | None, dict | None]:
        """The refinement of the start, else of the best structure, if not refined yet (module docstring):
        ``(candidate, None)`` when it moved, ``(None, record)`` when it did not, ``(None, None)`` when
        there is nothing left to refine."""
        from pymatgen.core import Structure

        from aso_workflows.optimizers.polish import refine_pdf
        from aso_workflows.structures import structure_fingerprint

        state = ctx.state
        done = {
            ((p.get("predicted") or {}).get("refine_best") or {}).get("origin") for p in _proposals(state)
        }
        evals = state.evaluations("completed")
        start = [e for e in evals if e.get("kind") == "start"]
        best = sorted(evals, key=lambda e: e["objective"])[:1]
        todo = next((e for e in start + best if e["fingerprint"] not in done), None)
        if todo is None:
            return None, None
        names = list(_fit_names(state)) + (["abc"] if self.refine_lattice else [])
        refined = refine_pdf(state, Structure.from_dict(todo["structure"]), names, self.best_max_calls)
        fp = structure_fingerprint(refined.structure)
        known = {e["fingerprint"] for e in evals} | {structure_fingerprint(s) for s in ctx.pending}
        record = {
            "origin": todo["fingerprint"],
            "origin_kind": todo.get("kind"),
            "pdf_calculations": int(refined.calls),
            "n_parameters": len(refined.values),
            "rw": float(refined.rw),
            "status": refined.status,
            "moved": fp not in known,
        }
        if fp in known:
            return None, record
        cand = CandidateProposal(
            structure=refined.structure,
            predicted={"refine_best": record},
            note=f"pdffit2 refinement of the {'start' if todo.get('kind') == 'start' else 'best structure'}: "
            f"{refined.calls} PDF calculation(s), Rw {refined.rw:.4g}",
        )
        return cand, None

    def _search(self, ctx: ProposalContext) -> list[CandidateProposal]:
        """ActiveStructOpt's proposals, the ``top`` ones polished by ``max_calls`` refinement calls."""
        from aso_workflows.optimizers.aso import ActiveStructOpt

        state = ctx.state
        aso = ActiveStructOpt.from_config(state.config)
        proposals, acq = aso.surrogate_proposals(ctx)
        order = sorted(range(len(proposals)), key=lambda k: proposals[k].acquisition)
        polish = set(order if self.top is None else order[: self.top]) if self.max_calls else set()
        threshold = float(state.config.proposal.diversity_threshold)
        others = [s for s, _ in ctx.evaluated] + list(ctx.pending)
        out: list[CandidateProposal] = []
        for k, p in enumerate(proposals):
            if k in polish:
                p = self._polish(ctx, p, others, threshold)
            cand = aso.candidate(ctx, p, acq)
            if "refine" in p.search:
                cand.predicted["refine"] = p.search.pop("refine")
                cand.predicted["search"] = dict(p.search)
                r = cand.predicted["refine"]
                why = ""
                if not r["used"]:
                    why = (
                        " (no step moved it)"
                        if not r["steps"]
                        else " (too close to a known structure: not used)"
                    )
                cand.note += (
                    f"; refined: {r['steps']} pdffit2 step(s), {r['pdf_calculations']} PDF calculation(s)"
                    + why
                )
            out.append(cand)
            others.append(cand.structure)
        return out

    def _polish(
        self, ctx: ProposalContext, p: Proposal, others: list[Structure], threshold: float
    ) -> Proposal:
        """The proposer's proposal ``p`` with its structure refined and its prediction redone there."""
        import torch

        from aso_workflows.optimizers.aso.proposal import rms_displacement
        from aso_workflows.spectra.pdf import PDFSimulator

        state = ctx.state
        sim = state.simulators["pdf"]
        assert isinstance(sim, PDFSimulator)  # the registry's simulator of technique "pdf"
        refined, info = refine_structure(
            p.structure,
            state.targets["pdf"].y,
            sim,
            state.dmin_matrix,
            self.max_calls,
            self.refine_lattice,
        )
        used = info["steps"] > 0
        if used and others:
            frac = torch.tensor(np.stack([s.frac_coords for s in others]))
            lat = torch.tensor(np.stack([s.lattice.matrix for s in others]))
            near = rms_displacement(
                torch.tensor(refined.frac_coords)[None], torch.tensor(refined.lattice.matrix)[None], frac, lat
            )
            used = float(near.min()) >= threshold  # converged onto a structure simulated or proposed
        info["used"] = used
        info["acquisition_before"] = float(p.acquisition)
        search = {**p.search, "refine": info}
        if not used:
            return dataclasses.replace(p, search=search)
        mean, std, value = _predict(ctx, refined, p)
        return dataclasses.replace(p, structure=refined, mean=mean, std=std, acquisition=value, search=search)


def _proposals(state: object) -> list[dict]:
    """The campaign's stored proposals (every optimiser's view of the campaign is a CampaignState)."""
    getter = getattr(state, "proposals", None)
    return list(getter()) if callable(getter) else []


def _fit_names(state: object) -> list[str]:
    """The PDF target's ``fit.refine`` (what the campaign fits per candidate; refined with positions)."""
    terms = getattr(getattr(state, "objective", None), "terms", [])
    term = next((t for t in terms if t.technique == "pdf"), None)
    spec = getattr(getattr(term, "fitter", None), "spec", None)
    return list(spec.refine) if spec is not None else []


def _predict(ctx: ProposalContext, structure: Structure, p: Proposal) -> tuple[dict, dict, float]:
    """The surrogate's prediction and acquisition at ``structure`` (the refined candidate)."""
    import torch

    from aso_workflows.optimizers.aso import ActiveStructOpt

    aso = ActiveStructOpt.from_config(ctx.state.config)
    acq = aso.acquisition(ctx)
    assert ctx.models is not None  # aso-refine needs a surrogate: the campaign trained one per technique
    means, stds = {}, {}
    with torch.no_grad():
        for t, model in ctx.models.items():
            pos = torch.tensor(structure.cart_coords)[None]
            lat = torch.tensor(structure.lattice.matrix)[None]
            m, s = model.predict_torch(pos, lat)
            means[t], stds[t] = m, s
        value = float(acq(means, stds)[0])
    return (
        {t: v[0].cpu().numpy().astype(float) for t, v in means.items()},
        {t: v[0].cpu().numpy().astype(float) for t, v in stds.items()},
        value,
    )
