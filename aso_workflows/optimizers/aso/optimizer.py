"""ActiveStructOpt: gradient proposals through the surrogate ensemble, scored by a lower confidence bound."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from aso_workflows.optimizers.aso.acquisition import LCBSchedule, LowerConfidenceBound
from aso_workflows.optimizers.aso.proposal import GradientProposer
from aso_workflows.optimizers.base import CandidateProposal, Optimizer, ProposalContext
from aso_workflows.optimizers.registry import register_optimizer

__all__ = ["ActiveStructOpt"]


@register_optimizer("aso")
@dataclass
class ActiveStructOpt(Optimizer):
    """The method of Slagle, Alamgir & Fung with our batch extension.

    Attributes
    ----------
    proposer
        Multi-start gradient optimiser of positions through the surrogate.
    schedule
        λ of the lower confidence bound, 0 for the last part of the budget.
    metric
        ``"mae"`` (reference) or ``"mse"`` in the acquisition.
    n_best_starts
        How many of the best evaluated structures seed the random starts.
    """

    proposer: GradientProposer = dataclasses.field(default_factory=GradientProposer)
    schedule: LCBSchedule = dataclasses.field(default_factory=LCBSchedule)
    metric: str = "mae"
    n_best_starts: int = 8
    needs_surrogate: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config) -> ActiveStructOpt:
        return cls(proposer=config.proposal, schedule=config.acquisition, metric=config.acquisition_metric)

    def acquisition(self, ctx: ProposalContext) -> LowerConfidenceBound:
        state = ctx.state
        terms = {t.technique: t for t in state.config.targets}
        targets = {k: torch.as_tensor(s.y, dtype=torch.float32) for k, s in state.targets.items()}
        scales = {k: float(np.std(s.y)) or 1.0 for k, s in state.targets.items()}
        weights = {k: terms[k].weight for k in targets}
        lam = self.schedule.lam_at(ctx.n_used, ctx.budget)
        return LowerConfidenceBound(
            targets=targets, weights=weights, scales=scales, lam=lam, metric=self.metric
        )

    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        state = ctx.state
        if not ctx.models:
            raise RuntimeError("ActiveStructOpt needs trained surrogate models")
        acq = self.acquisition(ctx)
        starts = [s for s, _ in ctx.evaluated[: self.n_best_starts]]
        proposer = dataclasses.replace(self.proposer, q=ctx.q, seed=ctx.seed)
        predict = {k: m.predict_torch for k, m in ctx.models.items()}
        out = proposer.propose(
            starts,
            predict,
            acq,
            state.dmin_matrix,
            pending=ctx.pending,
            evaluated=[s for s, _ in ctx.evaluated],
        )
        result = []
        for p in out:
            predicted = {
                k: {"mean": np.asarray(p.mean[k]).tolist(), "std": np.asarray(p.std[k]).tolist()}
                for k in p.mean
            }
            predicted["objective"] = self._predicted_objective(state, p.mean)
            predicted["lambda"] = acq.lam
            result.append(
                CandidateProposal(
                    structure=p.structure,
                    acquisition=float(p.acquisition),
                    predicted=predicted,
                    note=getattr(p, "note", ""),
                )
            )
        return result

    @staticmethod
    def _predicted_objective(state, means: dict) -> float:
        """The campaign objective evaluated on the predicted mean spectra (surrogate accuracy check)."""
        from aso_workflows.spectra.spectrum import Spectrum

        spectra = {
            k: Spectrum(technique=k, grid=state.targets[k].grid, values=np.asarray(v, dtype=float).tolist())
            for k, v in means.items()
        }
        total, _ = state.objective.evaluate(spectra)
        return float(total)
