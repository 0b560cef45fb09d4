"""Optimisers that propose the next candidates of a campaign: ActiveStructOpt and the baselines.

Each optimiser is one module registered by name (:mod:`~aso_workflows.optimizers.registry`).
"""

from __future__ import annotations

from aso_workflows.optimizers.base import CandidateProposal, Optimizer, ProposalContext
from aso_workflows.optimizers.registry import (
    make_optimizer,
    optimizer_class,
    optimizer_names,
    register_optimizer,
)

__all__ = [
    "CandidateProposal",
    "Optimizer",
    "ProposalContext",
    "make_optimizer",
    "optimizer_class",
    "optimizer_names",
    "register_optimizer",
]
