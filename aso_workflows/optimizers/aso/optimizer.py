"""ActiveStructOpt: gradient proposals through the surrogate ensemble, scored by a lower confidence bound."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from aso_workflows.optimizers.aso.acquisition import LCBSchedule, LowerConfidenceBound
from aso_workflows.optimizers.aso.local import SurrogateRefine
from aso_workflows.optimizers.aso.proposal import GradientProposer, Proposal
from aso_workflows.optimizers.base import (
    FALLBACK_KIND,
    CampaignSettingsView,
    CampaignView,
    CandidateProposal,
    Optimizer,
    ProposalContext,
)
from aso_workflows.optimizers.registry import register_optimizer
from aso_workflows.optimizers.sampling import PerturbationSampler

__all__ = ["ActiveStructOpt"]


@register_optimizer("aso")
@dataclass
class ActiveStructOpt(Optimizer):
    """ActiveStructOpt (Slagle, Alamgir & Fung) with our batch extension: a surrogate ensemble, a
    lower-confidence-bound acquisition and gradient proposals, q candidates per iteration.

    Attributes
    ----------
    proposer
        Multi-start gradient optimiser of positions through the surrogate.
    schedule
        λ of the lower confidence bound, 0 for the last part of the budget (the exploitation phase,
        where the proposer also searches with more starts and steps).
    metric
        ``"mae"`` (reference) or ``"mse"`` in the acquisition.
    n_best_starts
        ``proposal.starts: best`` only: how many of the best evaluated structures seed the starts.
    sampler
        Draws the fresh perturbations of the start among the proposal's starts (the campaign's sampler).
    local
        Refinement of the proposals through the surrogate where it is exact (``surrogate_refine:``,
        :mod:`~aso_workflows.optimizers.aso.local`).
    """

    proposer: GradientProposer = dataclasses.field(default_factory=GradientProposer)
    schedule: LCBSchedule = dataclasses.field(default_factory=LCBSchedule)
    metric: Literal["mae", "mse"] = "mae"
    n_best_starts: int = 8
    sampler: PerturbationSampler = dataclasses.field(default_factory=PerturbationSampler)
    local: SurrogateRefine = dataclasses.field(default_factory=SurrogateRefine)
    needs_surrogate: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config: CampaignSettingsView) -> ActiveStructOpt:
        return cls(
            proposer=config.proposal,
            schedule=config.acquisition,
            metric=config.acquisition_metric,
            sampler=config.sampler,
            local=config.surrogate_refine,
        )

    def acquisition(self, ctx: ProposalContext) -> LowerConfidenceBound:
        import torch

        state = ctx.state
        terms = {t.technique: t for t in state.config.targets}
        targets = {k: torch.as_tensor(s.y, dtype=torch.float32) for k, s in state.targets.items()}
        scales = {k: float(np.std(s.y)) or 1.0 for k, s in state.targets.items()}
        weights = {k: terms[k].weight for k in targets}
        lam = self.schedule.lam_at(ctx.n_used, ctx.budget)
        return LowerConfidenceBound(
            targets=targets, weights=weights, scales=scales, lam=lam, metric=self.metric
        )

    def surrogate_proposals(self, ctx: ProposalContext) -> tuple[list[Proposal], LowerConfidenceBound]:
        """The proposer's candidates for this iteration and the acquisition they were scored by."""
        state = ctx.state
        if not ctx.models:
            raise RuntimeError("ActiveStructOpt needs trained surrogate models")
        acq = self.acquisition(ctx)
        ranked = [s for s, _ in ctx.evaluated]
        starts = ranked[: self.n_best_starts] if self.proposer.starts == "best" else ranked
        from aso_workflows.optimizers.constraint import campaign_constraint

        constraint = campaign_constraint(state)
        proposer = dataclasses.replace(self.proposer, q=ctx.q, seed=ctx.seed, constraint=constraint)
        sampler = dataclasses.replace(self.sampler, constraint=constraint)
        predict = {k: m.predict_torch for k, m in ctx.models.items()}
        # an exact surrogate (a prior that explains the data) is searched by L-BFGS through it; not with a
        # symmetry constraint, whose map of the positions the L-BFGS steps do not follow
        exact = self.local.applies(ctx.models) and constraint is None
        if exact and self.local.search == "local":
            out = self._local_search(ctx, ranked, predict, acq, proposer)
            if out:  # none distinct: the starts ended on known structures; the gradient search decides
                return out, acq
        out = proposer.propose(
            starts,
            predict,
            acq,
            state.dmin_matrix,
            pending=ctx.pending,
            evaluated=ranked,
            reference=state.start,
            sampler=sampler,
            exploit=self.schedule.exploiting(ctx.n_used, ctx.budget),
        )
        if exact:
            out = self.local.refine(
                out,
                predict,
                acq,
                state.dmin_matrix,
                [*ranked, *ctx.pending],
                penalty_weight=self.proposer.penalty_weight,
            )
        return out, acq

    def _local_search(
        self,
        ctx: ProposalContext,
        ranked: list,
        predict: dict,
        acq: LowerConfidenceBound,
        proposer: GradientProposer,
    ) -> list[Proposal]:
        """Multi-start L-BFGS through the exact surrogate (``surrogate_refine.search: local``)."""
        state = ctx.state
        fresh = []
        if self.local.fresh:
            fresh = proposer._perturb(
                self.sampler, state.start, self.local.fresh, state.dmin_matrix, ctx.seed
            )
        return self.local.search_local(
            ranked,
            [*ranked, *ctx.pending],
            predict,
            acq,
            state.dmin_matrix,
            ctx.q,
            fresh=fresh,
            penalty_weight=self.proposer.penalty_weight,
            max_ratio=self.proposer.fallback_max_ratio,
        )

    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        out, acq = self.surrogate_proposals(ctx)
        return [self.candidate(ctx, p, acq) for p in out]

    def candidate(self, ctx: ProposalContext, p: Proposal, acq: LowerConfidenceBound) -> CandidateProposal:
        """A proposer's :class:`Proposal` as the campaign stores it (kind ``fallback`` when it is one)."""
        predicted: dict = {
            k: {"mean": np.asarray(p.mean[k]).tolist(), "std": np.asarray(p.std[k]).tolist()} for k in p.mean
        }
        predicted["objective"] = self._predicted_objective(ctx.state, p.mean)
        predicted["lambda"] = acq.lam
        predicted["search"] = dict(p.search)
        if p.fallback:
            note = (
                "local perturbation of the best structure: too few optimised starts were valid and distinct"
            )
        elif p.search.get("phase") == "local":
            note = "L-BFGS through the exact surrogate (physics prior) from " + (
                "a fresh perturbation of the start"
                if p.start_index >= p.search.get("n_starts", 0) - p.search.get("fresh_starts", 0)
                else "an evaluated structure"
            )
        else:
            origin = "a fresh perturbation of the start" if p.parent_index < 0 else "an evaluated structure"
            note = f"gradient proposal from {origin} ({p.search.get('phase', 'explore')} search)"
        return CandidateProposal(
            structure=p.structure,
            acquisition=float(p.acquisition),
            predicted=predicted,
            note=note,
            kind=FALLBACK_KIND if p.fallback else None,
        )

    @staticmethod
    def _predicted_objective(state: CampaignView, means: dict) -> float:
        """The campaign objective evaluated on the predicted mean spectra (surrogate accuracy check)."""
        from aso_workflows.spectra.spectrum import Spectrum

        spectra = {
            k: Spectrum(technique=k, grid=state.targets[k].grid, values=np.asarray(v, dtype=float).tolist())
            for k, v in means.items()
        }
        total, _ = state.objective.evaluate(spectra)
        return float(total)
