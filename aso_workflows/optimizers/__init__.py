"""Optimisers that propose the next candidates of a campaign (ASO and baselines)."""

from __future__ import annotations

from aso_workflows.optimizers.base import CandidateProposal, Optimizer, ProposalContext, make_optimizer

__all__ = ["CandidateProposal", "Optimizer", "ProposalContext", "make_optimizer"]
