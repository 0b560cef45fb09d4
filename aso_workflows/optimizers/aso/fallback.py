"""What a proposal does when fewer than ``q`` optimised starts are valid and distinct.

Near convergence every start ends within ``diversity_threshold`` (0.05 Å RMS) of a structure already
evaluated: the search has found the minimum the data point to, and "distinct" rules out the one
place worth simulating. Random perturbations of the best structures by 0.1–0.5 Å (the earlier fallback)
then cost simulations that are 1,000× worse than the best (the README's main job: 9 of its 50
simulations). The rules here, in order, until the batch is full:

1. **Refinements of the best.** A valid optimised candidate that is closer than the diversity
   threshold to a known structure but at least ``min_separation`` (RMS, default 2e-3 Å: the structure
   fingerprint's resolution) from every known and chosen one, and whose predicted objective is below the
   best evaluated structure's, is proposed as the method's own candidate: it is the surrogate's best
   guess at an improvement, only closer than the threshold asks.
2. **Local perturbations of the best.** Random perturbations of the best evaluated structure with an
   RMS amplitude sized to its neighbourhood — between half and all of the RMS distance to the nearest
   other evaluated structure, at most ``fallback_max_displacement`` — so they shrink as the search
   converges; many are drawn, ranked by acquisition, and one is kept only if its predicted objective is
   within ``fallback_max_ratio`` of the best's (stored as kind ``fallback``).
3. Otherwise **the batch shrinks**: fewer than ``q`` candidates are proposed (at least one per call).

The predicted objective is the acquisition with the MSE metric and λ = 0 (the campaign's normalised
MSE as the surrogate predicts it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pymatgen.core import Structure

from aso_workflows.optimizers.aso.candidates import nearest_rms
from aso_workflows.optimizers.sampling import PerturbationSampler

if TYPE_CHECKING:
    import torch

    from aso_workflows.optimizers.aso.acquisition import AcquisitionFunction
    from aso_workflows.optimizers.aso.candidates import Predictor, Proposal

__all__ = ["fill_batch"]


class GradientProposer(Protocol):
    """What the batch completion reads of :class:`~aso_workflows.optimizers.aso.proposal.GradientProposer`
    (a protocol, so that the proposer can call this module without an import circle)."""

    @property
    def q(self) -> int: ...

    @property
    def dtype(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def constraint(self) -> Any: ...

    @property
    def fallback_min_displacement(self) -> float: ...

    @property
    def fallback_max_displacement(self) -> float: ...

    @property
    def fallback_max_ratio(self) -> float: ...

    @property
    def min_separation(self) -> float: ...

    def _evaluate(
        self,
        pos: torch.Tensor,
        lat: torch.Tensor,
        predict: Mapping[str, Predictor],
        acquisition: AcquisitionFunction,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]: ...

    def relaxed(self, q: int, diversity_threshold: float) -> GradientProposer: ...

    def _greedy(
        self,
        order: list[int],
        frac: torch.Tensor,
        lat: torch.Tensor,
        ref_frac: torch.Tensor,
        ref_lat: torch.Tensor,
        chosen_frac: list[torch.Tensor],
        chosen_lat: list[torch.Tensor],
    ) -> list[int]: ...

    def _structure(self, like: Structure, frac: torch.Tensor, lat: torch.Tensor) -> Structure: ...

    def _perturb(
        self, sampler: PerturbationSampler, s: Structure, n: int, dmin_matrix: np.ndarray, seed: int | None
    ) -> list[Structure]: ...


log = logging.getLogger(__name__)

#: local perturbations drawn per missing candidate
_DRAWS = 16


def _objective(acquisition: AcquisitionFunction) -> AcquisitionFunction:
    """The predicted normalised MSE (``acquisition`` with metric ``mse`` and λ = 0) when it is an LCB."""
    from aso_workflows.optimizers.aso.acquisition import LowerConfidenceBound

    if not isinstance(acquisition, LowerConfidenceBound):
        return acquisition
    return LowerConfidenceBound(
        targets=acquisition._targets,
        weights=acquisition._weights,
        scales=acquisition._scales,
        lam=0.0,
        metric="mse",
    )


def _tensors(
    structures: Sequence[Structure], proposer: GradientProposer
) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    from aso_workflows.optimizers.aso.candidates import resolve_device as _resolve_device

    dtype, device = getattr(torch, proposer.dtype), _resolve_device(proposer.device)
    pos = torch.tensor(np.stack([s.cart_coords for s in structures]), dtype=dtype, device=device)
    lat = torch.tensor(np.stack([s.lattice.matrix for s in structures]), dtype=dtype, device=device)
    return pos, lat


def fill_batch(
    proposer: GradientProposer,
    *,
    start_structures: Sequence[Structure],
    predict: Mapping[str, Predictor],
    acquisition: AcquisitionFunction,
    dmin_matrix: np.ndarray,
    optimised: dict[str, Any],
    order: list[int],
    chosen: list[int],
    ref_frac: torch.Tensor,
    ref_lat: torch.Tensor,
    seed: int | None,
    search: dict,
) -> list[Proposal]:
    """The candidates that complete a batch of ``proposer.q`` (module docstring); may be fewer.

    Parameters
    ----------
    optimised
        The search's result: ``frac``, ``lat`` (float64, CPU), ``value``, ``means``, ``stds`` per start,
        and ``parents``.
    order
        Valid starts, best acquisition first; ``chosen`` the ones already proposed.
    ref_frac, ref_lat
        Pending and evaluated structures (fractional coordinates, lattices).
    """
    import torch

    from aso_workflows.optimizers.aso.candidates import Proposal

    objective = _objective(acquisition)
    best = start_structures[0]
    with torch.no_grad():
        best_pred = float(proposer._evaluate(*_tensors([best], proposer), predict, objective)[0][0])
    need = proposer.q - len(chosen)
    cf = [optimised["frac"][k] for k in chosen]
    cl = [optimised["lat"][k] for k in chosen]
    picked = _refinements(
        proposer, optimised, order, chosen, ref_frac, ref_lat, cf, cl, objective, best_pred, need
    )
    out = [
        Proposal(
            structure=proposer._structure(best, optimised["frac"][k], optimised["lat"][k]),
            acquisition=float(optimised["value"][k]),
            mean={t: v[k].detach().cpu().numpy().astype(float) for t, v in optimised["means"].items()},
            std={t: v[k].detach().cpu().numpy().astype(float) for t, v in optimised["stds"].items()},
            start_index=k,
            parent_index=int(optimised["parents"][k]),
            search={**search, "near_known": True},
        )
        for k in picked
    ]
    need -= len(out)
    if need > 0:
        cf += [optimised["frac"][k] for k in picked]
        cl += [optimised["lat"][k] for k in picked]
        out += _local(
            proposer,
            best,
            start_structures[1:],
            predict,
            (acquisition, objective, best_pred),
            dmin_matrix,
            (ref_frac, ref_lat, cf, cl),
            need,
            seed,
            search,
            force=not chosen and not out,
        )
    missing = proposer.q - len(chosen) - len(out)
    if missing > 0:
        log.info(
            "gradient proposal: batch shrinks by %d (no distinct candidate predicted good enough)", missing
        )
    summary = {"near_known": len(picked), "local": sum(p.fallback for p in out), "shrunk": max(missing, 0)}
    search["fallback"] = summary
    for p in out:
        p.search["fallback"] = summary
    return out


def _refinements(
    proposer: GradientProposer,
    optimised: dict[str, Any],
    order: list[int],
    chosen: list[int],
    ref_frac: torch.Tensor,
    ref_lat: torch.Tensor,
    cf: list[torch.Tensor],
    cl: list[torch.Tensor],
    objective: AcquisitionFunction,
    best_pred: float,
    need: int,
) -> list[int]:
    """Rule 1: valid optimised starts predicted better than the best, ≥ ``min_separation`` from all."""
    import torch

    means = optimised["means"]
    stds = optimised["stds"]
    rest = [k for k in order if k not in chosen]
    if not rest:
        return []
    idx = torch.tensor(rest)
    with torch.no_grad():
        pred = objective({t: v[idx] for t, v in means.items()}, {t: v[idx] for t, v in stds.items()}).cpu()
    better = [k for k, v in zip(rest, pred.tolist(), strict=True) if v < best_pred]
    relaxed = proposer.relaxed(q=need, diversity_threshold=proposer.min_separation)
    return relaxed._greedy(better, optimised["frac"], optimised["lat"], ref_frac, ref_lat, cf, cl)


def _local(
    proposer: GradientProposer,
    best: Structure,
    others: Sequence[Structure],
    predict: Mapping[str, Predictor],
    scoring: tuple[AcquisitionFunction, AcquisitionFunction, float],
    dmin_matrix: np.ndarray,
    known: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]],
    need: int,
    seed: int | None,
    search: dict,
    force: bool,
) -> list[Proposal]:
    """Rule 2: perturbations of the best sized to its neighbourhood, kept if predicted good enough
    (``force``: the best one anyway, so that a call proposes at least one candidate)."""
    import torch

    from aso_workflows.optimizers.aso.candidates import Proposal
    from aso_workflows.optimizers.aso.candidates import stack as _stack

    acquisition, objective, best_pred = scoring
    scale = max(
        min(proposer.fallback_max_displacement, nearest_rms(best, others)), 2 * proposer.min_separation
    )
    sampler = PerturbationSampler(
        min_displacement=min(proposer.fallback_min_displacement, scale / 2),
        max_displacement=scale,
        seed=seed,
        constraint=proposer.constraint,
    )
    candidates = proposer._perturb(sampler, best, _DRAWS * need, dmin_matrix, seed)
    if not candidates:
        return []
    pos, lat = _tensors(candidates, proposer)
    with torch.no_grad():
        value, means, stds = proposer._evaluate(pos, lat, predict, acquisition)
        pred = objective(means, stds).cpu()
    value = torch.where(torch.isfinite(value), value, torch.full_like(value, torch.inf)).cpu()
    ranked = [int(k) for k in torch.argsort(value)]
    ok = [k for k in ranked if float(pred[k]) <= proposer.fallback_max_ratio * max(best_pred, 0.0)]
    frac, flat = _stack(candidates)
    relaxed = proposer.relaxed(q=need, diversity_threshold=proposer.min_separation)
    picked = relaxed._greedy(ok or (ranked[:1] if force else []), frac, flat, *known)
    local = {**search, "fallback_scale": round(scale, 6)}
    return [
        Proposal(
            structure=candidates[k],
            acquisition=float(value[k]),
            mean={t: v[k].cpu().numpy().astype(float) for t, v in means.items()},
            std={t: v[k].cpu().numpy().astype(float) for t, v in stds.items()},
            start_index=k,
            parent_index=0,
            fallback=True,
            search=local,
        )
        for k in picked
    ]
