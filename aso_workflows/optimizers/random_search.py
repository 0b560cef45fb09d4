"""Random search: perturb the start structure and simulate (the simplest baseline)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from aso_workflows.optimizers.base import CampaignSettingsView, CandidateProposal, Optimizer, ProposalContext
from aso_workflows.optimizers.registry import register_optimizer
from aso_workflows.optimizers.sampling import PerturbationSampler

__all__ = ["RandomSearch"]


@register_optimizer("random")
@dataclass
class RandomSearch(Optimizer):
    """Fresh random perturbations of the start structure, without a surrogate.

    Each candidate comes from the same sampler and constraints as the initial data, so the budget is
    spent exactly like ASO's.
    """

    sampler: PerturbationSampler = dataclasses.field(default_factory=PerturbationSampler)

    @classmethod
    def from_config(cls, config: CampaignSettingsView) -> RandomSearch:
        return cls(sampler=config.sampler)

    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        from aso_workflows.optimizers.constraint import campaign_constraint

        state = ctx.state
        sampler = dataclasses.replace(
            self.sampler,
            seed=ctx.seed,
            min_distances=dict(state.config.min_distances),
            min_distance_scale=state.config.min_distance_scale,
            constraint=campaign_constraint(state),
        )
        return [
            CandidateProposal(structure=s, note="random perturbation")
            for s in sampler.sample(state.start, ctx.q, dmin_matrix=state.dmin_matrix)
        ]
