"""The optimiser interface: given the campaign so far, propose the next q structures.

ActiveStructOpt (surrogate + acquisition + gradient proposals) and the baselines (random search, reverse
Monte Carlo, GP Bayesian optimisation, DiffPy refinement; see docs/baselines.md) all plug into the same
campaign machinery through this interface, so they run locally and on the cluster and their results land
in the same store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
from pymatgen.core import Structure

__all__ = ["ProposalContext", "CandidateProposal", "Optimizer", "make_optimizer"]


@dataclass
class ProposalContext:
    """What an optimiser may look at when proposing.

    Attributes
    ----------
    state
        The :class:`~aso_workflows.campaign.state.CampaignState` (config, targets, simulators, store).
    evaluated
        Completed evaluations as ``(structure, objective)``, best first.
    pending
        Structures proposed but not yet evaluated (to avoid proposing them again).
    models
        Trained surrogates per technique (``None`` for optimisers that need none).
    iteration
        The iteration whose candidates are being proposed.
    n_used, budget
        Simulations used so far and the total budget.
    q
        How many candidates to propose.
    seed
        Seed for this proposal (campaign seed + iteration), for reproducibility.
    """

    state: object
    evaluated: list[tuple[Structure, float]]
    pending: list[Structure]
    models: dict | None
    iteration: int
    n_used: int
    budget: int
    q: int
    seed: int


@dataclass
class CandidateProposal:
    """One proposed structure, with what the optimiser predicted for it (if anything)."""

    structure: Structure
    acquisition: float | None = None
    predicted: dict = field(default_factory=dict)  # technique -> {"mean": [...], "std": [...]} + objective
    note: str = ""


class Optimizer(ABC):
    """Proposes candidate structures; ``needs_surrogate`` says whether the campaign trains models."""

    needs_surrogate: bool = False

    @abstractmethod
    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        """Return up to ``ctx.q`` candidates satisfying the minimum-distance constraints."""


def make_optimizer(name: str, config) -> Optimizer:
    """The optimiser named in the campaign config (``aso``, ``random``, ``rmc``, ``gpbo`` or ``diffpy``)."""
    if name == "aso":
        from aso_workflows.optimizers.aso import ActiveStructOpt

        return ActiveStructOpt.from_config(config)
    if name == "random":
        from aso_workflows.optimizers.random_search import RandomSearch

        return RandomSearch.from_config(config)
    if name == "rmc":
        from aso_workflows.optimizers.rmc import ReverseMonteCarlo

        return ReverseMonteCarlo.from_config(config)
    if name == "gpbo":
        from aso_workflows.optimizers.gp_bo import GPBayesOpt

        return GPBayesOpt.from_config(config)
    if name == "diffpy":
        from aso_workflows.optimizers.diffpy_refine import DiffPyRefinement

        return DiffPyRefinement.from_config(config)
    from aso_workflows.errors import InputError

    raise InputError(
        "optimizer", f"unknown optimizer {name!r}; expected one of 'aso', 'random', 'rmc', 'gpbo', 'diffpy'"
    )


def rng_for(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
