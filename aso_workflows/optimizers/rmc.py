"""Reverse Monte Carlo: single-atom Gaussian moves, Metropolis acceptance on the campaign mismatch.

Every move is one simulation: a proposal is one structure that differs from the current configuration by
one displaced atom, the campaign simulates it with the same simulators and mismatch as every other
optimiser, and the Metropolis rule decides whether it becomes the current configuration.

Nothing is kept in memory between jobs. The chain (current configuration and its mismatch) is derived
from the store each time: the chronological evaluations of kind ``"rmc"`` are replayed with the Metropolis
rule, each acceptance draw coming from a generator seeded by (campaign seed, iteration, candidate). The
replay is therefore deterministic, a crashed or resumed campaign continues exactly where it stopped, and
the propose job can run on any machine.

Temperature
-----------
The mismatch is dimensionless but its scale depends on the targets, so the temperature is relative to
the current mismatch ``E``: an uphill move to ``E' > E`` is accepted with probability

    p = exp(-(E' - E) / (T · E))

so ``T = 0.05`` accepts a move that worsens the mismatch by 5 % with probability 1/e, whatever the
absolute scale. ``T = 0`` is a greedy descent (only moves with ``E' ≤ E``). With ``final_temperature``
set, ``T`` decreases geometrically from ``temperature`` to ``final_temperature`` over the RMC moves the
budget allows (simulated annealing).

Batches
-------
With ``batch_size`` q > 1, q independent single-atom moves are drawn from the same current configuration
and simulated in parallel. Acceptance is sequential Metropolis over the q results in candidate order:
each result is compared with the configuration current at that point and, if accepted, replaces it as a
whole (its structure and mismatch are exactly what was simulated). A later accepted move therefore
discards an earlier accepted move of the same batch: no unsimulated combination of moves ever becomes
the current configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.optimizers.base import CampaignView, CandidateProposal, Optimizer, ProposalContext
from aso_workflows.optimizers.registry import register_optimizer
from aso_workflows.settings import settings_dataclass

if TYPE_CHECKING:
    import torch

__all__ = ["ReverseMonteCarlo", "ChainState", "RMCMove", "acceptance_draw", "metropolis_accept"]

KIND = "rmc"
_INITIAL_KINDS = ("start", "initial")


def _rng(seed: int, iteration: int, candidate: int, purpose: int) -> np.random.Generator:
    """A generator that depends only on (seed, iteration, candidate, purpose): replays are exact."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, iteration, candidate, purpose])
    )


def acceptance_draw(seed: int, iteration: int, candidate: int) -> float:
    """The uniform number in [0, 1) that decides the Metropolis test of one move."""
    return float(_rng(seed, iteration, candidate, 1).random())


def metropolis_accept(current: float, new: float, temperature: float, u: float) -> bool:
    """Metropolis rule with a temperature relative to the current mismatch.

    Parameters
    ----------
    current, new
        Mismatch of the current configuration and of the moved one.
    temperature
        Relative temperature ``T`` (≥ 0): an uphill move is accepted if
        ``u < exp(-(new - current) / (T · current))``.
    u
        Uniform draw in [0, 1) (see :func:`acceptance_draw`).
    """
    if new <= current:
        return True
    scale = temperature * current
    if scale <= 0:
        return False
    return bool(u < math.exp(-(new - current) / scale))


@dataclass
class RMCMove:
    """One simulated move as read back from the store."""

    structure: Structure
    objective: float | None  # None: the simulation failed (treated as rejected)
    iteration: int
    candidate: int


@dataclass
class ChainState:
    """The Markov chain after replaying the stored moves.

    Attributes
    ----------
    structure, objective
        Current configuration and its mismatch.
    n_moves
        Moves replayed (completed simulations of kind ``rmc``).
    accepted
        One flag per replayed move.
    """

    structure: Structure
    objective: float
    n_moves: int = 0
    accepted: list[bool] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return sum(self.accepted) / len(self.accepted) if self.accepted else float("nan")


@register_optimizer("rmc")
@settings_dataclass
class ReverseMonteCarlo(Optimizer):
    """Reverse Monte Carlo on the campaign mismatch.

    See the module docstring.

    Attributes
    ----------
    sigma
        Standard deviation (Å) of the Gaussian displacement of the moved atom along each Cartesian axis;
        the reference step variance 0.0025 Å² gives 0.05 Å.
    temperature
        Relative Metropolis temperature ``T`` (≥ 0; 0 is greedy).
    final_temperature
        If set, anneal geometrically from ``temperature`` to this value over the budget's RMC moves.
    start_from
        ``"best"``: start the chain from the best initial structure (start included); ``"start"``: from
        the start structure.
    max_tries
        Moves drawn per candidate before giving up when every draw violates a minimum distance (a rejected
        draw costs no simulation).
    """

    sigma: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.05
    temperature: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.05
    final_temperature: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    start_from: Literal["best", "start"] = "best"
    max_tries: Annotated[int, Field(ge=1)] = 1000
    section: ClassVar[str | None] = "rmc"

    @model_validator(mode="after")
    def _annealing(self) -> ReverseMonteCarlo:
        if self.final_temperature is not None and not self.final_temperature <= self.temperature:
            raise ValueError(
                f"final_temperature ({self.final_temperature}) must not exceed temperature ({self.temperature})"
            )
        return self

    # ---- temperature schedule -------------------------------------------------------------------
    def temperature_at(self, move: int, n_moves: int) -> float:
        """Temperature of the ``move``-th RMC move (0-based) out of ``n_moves`` the budget allows."""
        if self.final_temperature is None or n_moves <= 1:
            return self.temperature
        frac = min(1.0, move / (n_moves - 1))
        return self.temperature * (self.final_temperature / self.temperature) ** frac

    # ---- replay ---------------------------------------------------------------------------------
    def replay(
        self,
        initial: Structure,
        initial_objective: float,
        moves: list[RMCMove],
        seed: int,
        n_moves_total: int,
    ) -> ChainState:
        """Replay stored moves in order with the Metropolis rule; deterministic.

        Parameters
        ----------
        initial, initial_objective
            Where the chain starts.
        moves
            The simulated moves in chronological (iteration, candidate) order.
        seed
            Campaign seed (with iteration and candidate it seeds each acceptance draw).
        n_moves_total
            Moves the budget allows (for the annealing schedule).
        """
        chain = ChainState(structure=initial, objective=float(initial_objective))
        for m in moves:
            if m.objective is None or not math.isfinite(m.objective):
                continue  # a failed simulation is a rejected move and costs no budget
            t = self.temperature_at(chain.n_moves, n_moves_total)
            ok = metropolis_accept(
                chain.objective, m.objective, t, acceptance_draw(seed, m.iteration, m.candidate)
            )
            if ok:
                chain.structure, chain.objective = m.structure, float(m.objective)
            chain.accepted.append(ok)
            chain.n_moves += 1
        return chain

    def chain_from_state(self, state: CampaignView) -> ChainState:
        """The current chain of a campaign, from its stored evaluations."""
        evals = state.evaluations(status=None)
        initial = [e for e in evals if e.get("kind") in _INITIAL_KINDS and e["status"] == "completed"]
        if self.start_from == "start":
            initial = [e for e in initial if e.get("kind") == "start"]
        if initial:
            first = min(initial, key=lambda e: e["objective"])
            s0, e0 = Structure.from_dict(first["structure"]), float(first["objective"])
        else:
            raise InputError("rmc", "the chain needs a simulated start structure; none is stored yet")
        moves = [
            RMCMove(
                structure=Structure.from_dict(e["structure"]),
                objective=e.get("objective") if e["status"] == "completed" else None,
                iteration=int(e["iteration"]),
                candidate=int(e["candidate"]),
            )
            for e in evals
            if e.get("kind") == KIND
        ]
        cfg = state.config
        n_total = max(1, cfg.budget - cfg.initial_size - 1)
        return self.replay(s0, e0, moves, cfg.seed, n_total)

    # ---- moves ----------------------------------------------------------------------------------
    def move(
        self, structure: Structure, dmin: np.ndarray, seed: int, iteration: int, candidate: int
    ) -> tuple[Structure, int, np.ndarray, int]:
        """One single-atom Gaussian move of ``structure`` that keeps every minimum distance.

        Returns the moved structure, the atom index, the Cartesian displacement (Å) and the number of
        draws it took (rejected draws cost no simulation).
        """
        rng = _rng(seed, iteration, candidate, 0)
        lat = np.array(structure.lattice.matrix, dtype=float)
        cart0 = np.asarray(structure.cart_coords, dtype=float)
        import torch

        lat_t = torch.from_numpy(lat)[None]
        n = len(structure)
        for tries in range(1, self.max_tries + 1):
            atom = int(rng.integers(n))
            step = rng.normal(0.0, self.sigma, size=3)
            cart = cart0.copy()
            cart[atom] += step
            if not _atom_violates(cart, lat_t, dmin, atom):
                moved = Structure(
                    structure.lattice,
                    structure.species,
                    cart,
                    coords_are_cartesian=True,
                    to_unit_cell=True,
                    site_properties=structure.site_properties or None,
                )
                return moved, atom, step, tries
        raise InputError(
            "rmc.sigma",
            f"no single-atom move of sigma {self.sigma} Å kept the minimum distances in {self.max_tries} draws",
        )

    def propose(self, ctx: ProposalContext) -> list[CandidateProposal]:
        state = ctx.state
        chain = self.chain_from_state(state)
        cfg = state.config
        t = self.temperature_at(chain.n_moves, max(1, cfg.budget - cfg.initial_size - 1))
        out = []
        for k in range(ctx.q):
            moved, atom, step, tries = self.move(
                chain.structure, state.dmin_matrix, cfg.seed, ctx.iteration, k
            )
            out.append(
                CandidateProposal(
                    structure=moved,
                    predicted={
                        "rmc": {
                            "atom": atom,
                            "step": step.tolist(),
                            "draws": tries,
                            "current_objective": chain.objective,
                            "temperature": t,
                            "moves_so_far": chain.n_moves,
                            "acceptance_rate": None if not chain.accepted else chain.acceptance_rate,
                        }
                    },
                    note=f"rmc move of atom {atom} by {float(np.linalg.norm(step)):.3f} Å",
                )
            )
        return out


def _atom_violates(cart: np.ndarray, lat_t: torch.Tensor, dmin: np.ndarray, atom: int) -> bool:
    """True if ``atom`` is closer than allowed to any atom or periodic image (others are not re-checked)."""
    import torch

    from aso_workflows.optimizers.sampling import close_pairs

    b, i, j, _, d = close_pairs(torch.from_numpy(cart)[None], lat_t, dmin)
    i, j, d = i.numpy(), j.numpy(), d.numpy()
    real = d < dmin[i, j]
    return bool(np.any(real & ((i == atom) | (j == atom))))
