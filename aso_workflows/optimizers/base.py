"""The optimiser interface: given the campaign so far, propose the next q structures.

ActiveStructOpt (surrogate + acquisition + gradient proposals) and the baselines (random search, reverse
Monte Carlo, GP Bayesian optimisation, DiffPy refinement; see docs/baselines.md) all plug into the same
campaign machinery through this interface, so they run locally and on the cluster and their results land
in the same store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pymatgen.core import Structure

__all__ = ["ProposalContext", "CandidateProposal", "Optimizer", "rng_for", "FALLBACK_KIND"]


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

    state: Any
    evaluated: list[tuple[Structure, float]]
    pending: list[Structure]
    models: dict | None
    iteration: int
    n_used: int
    budget: int
    q: int
    seed: int


#: Proposal kinds an optimiser may set instead of its own name (``CandidateProposal.kind``).
FALLBACK_KIND = "fallback"


@dataclass
class CandidateProposal:
    """One proposed structure, with what the optimiser predicted for it (if anything).

    Attributes
    ----------
    structure
        The candidate.
    acquisition
        Its acquisition value, when the optimiser has one.
    predicted
        ``{technique: {"mean": [...], "std": [...]}}`` plus extras (``objective``, ``lambda``, search
        statistics, refinement accounting).
    note
        One line for people.
    kind
        How it was made, when not by the optimiser's own method: :data:`FALLBACK_KIND` for a random
        perturbation used because the optimiser found nothing valid. ``None``: the optimiser's name.
        The campaign stores it as the proposal's (and evaluation's) ``kind``.
    """

    structure: Structure
    acquisition: float | None = None
    predicted: dict = field(default_factory=dict)  # technique -> {"mean": [...], "std": [...]} + objective
    note: str = ""
    kind: str | None = None


class Optimizer(ABC):
    """Proposes candidate structures.

    Class attributes
    ----------------
    name
        The registered name (``optimizer:`` in the campaign file; set by
        :func:`~aso_workflows.optimizers.registry.register_optimizer`).
    section
        The campaign-file section holding this optimiser's own settings (its dataclass fields), if any.
    needs_surrogate
        Whether the campaign trains surrogate models for it.
    required_techniques
        Target techniques it needs (one of them at least), e.g. ``("pdf",)`` for DiffPy refinement.
    """

    name: ClassVar[str] = ""
    section: ClassVar[str | None] = None
    needs_surrogate: ClassVar[bool] = False
    required_techniques: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls, config) -> Optimizer:
        """This optimiser as the campaign configures it: its own section, or its defaults."""
        return config.section(cls.section) if cls.section else cls()

    @abstractmethod
    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        """Return up to ``ctx.q`` candidates satisfying the minimum-distance constraints."""


def rng_for(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
