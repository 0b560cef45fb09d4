"""The optimiser interface: given the campaign so far, propose the next q structures.

ActiveStructOpt (surrogate + acquisition + gradient proposals) and the baselines (random search, reverse
Monte Carlo, GP Bayesian optimisation, DiffPy refinement; see docs/baselines.md) all plug into the same
campaign machinery through this interface, so they run locally and on the cluster and their results land
in the same store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np
from pymatgen.core import Structure

if TYPE_CHECKING:
    from aso_workflows.optimizers.aso.acquisition import LCBSchedule
    from aso_workflows.optimizers.aso.local import SurrogateRefine
    from aso_workflows.optimizers.aso.proposal import GradientProposer
    from aso_workflows.optimizers.sampling import PerturbationSampler
    from aso_workflows.spectra.base import Simulator
    from aso_workflows.spectra.mismatch import Objective
    from aso_workflows.spectra.spectrum import Spectrum

__all__ = [
    "ProposalContext",
    "CandidateProposal",
    "Optimizer",
    "rng_for",
    "FALLBACK_KIND",
    "CampaignView",
    "CampaignSettingsView",
    "TargetTermView",
]


# What an optimiser reads of the campaign, as protocols: optimisers are engines and import nothing of the
# campaign layers (aso_workflows.config, aso_workflows.campaign); CampaignConfig and CampaignState provide
# these members.
class TargetTermView(Protocol):
    """One target of the campaign: its technique and its weight in the objective."""

    @property
    def technique(self) -> str: ...
    @property
    def weight(self) -> float: ...


class CampaignSettingsView(Protocol):
    """The campaign settings optimisers read (:class:`~aso_workflows.config.CampaignConfig`)."""

    @property
    def targets(self) -> Sequence[TargetTermView]: ...
    @property
    def seed(self) -> int: ...
    @property
    def budget(self) -> int: ...
    @property
    def initial_size(self) -> int: ...
    @property
    def min_distances(self) -> Mapping[str, float]: ...
    @property
    def min_distance_scale(self) -> float: ...
    @property
    def sampler(self) -> PerturbationSampler: ...
    @property
    def proposal(self) -> GradientProposer: ...
    @property
    def acquisition(self) -> LCBSchedule: ...
    @property
    def acquisition_metric(self) -> Literal["mae", "mse"]: ...
    @property
    def surrogate_refine(self) -> SurrogateRefine: ...
    def section(self, name: str) -> Any:
        """The validated settings object of the campaign-file section ``name``."""
        ...


class CampaignView(Protocol):
    """The campaign as optimisers see it (:class:`~aso_workflows.campaign.state.CampaignState`)."""

    @property
    def config(self) -> CampaignSettingsView: ...
    @property
    def start(self) -> Structure: ...
    @property
    def dmin_matrix(self) -> np.ndarray: ...
    @property
    def targets(self) -> Mapping[str, Spectrum]: ...
    @property
    def simulators(self) -> Mapping[str, Simulator]: ...
    @property
    def objective(self) -> Objective: ...
    def evaluations(self, status: str | None = "completed") -> list[dict]:
        """Evaluation documents in order of evaluation, of one status (``None``: all)."""
        ...


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

    state: CampaignView
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
    def from_config(cls, config: CampaignSettingsView) -> Optimizer:
        """This optimiser as the campaign configures it: its own section, or its defaults."""
        return config.section(cls.section) if cls.section else cls()

    @abstractmethod
    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        """Return up to ``ctx.q`` candidates satisfying the minimum-distance constraints."""


def rng_for(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)
