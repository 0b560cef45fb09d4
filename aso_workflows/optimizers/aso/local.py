"""Refining proposals through the surrogate where it is exact (``surrogate_refine:``).

The gradient search (:mod:`~aso_workflows.optimizers.aso.proposal`) takes Adam steps of ~``lr`` Å from
many starts: a trust region around the data, right for a surrogate learned from 30 structures, but it
stops ~1e-3 Å short of a minimum. When every technique's surrogate is a physics prior that explains its
training spectra exactly (:class:`~aso_workflows.surrogate.residual.PriorResidualSurrogate` without a
trained residual: a simulated PDF target, where the prior equals pdffit2), the surrogate *is* the
simulator, and a proposal can be taken to the minimum of the predicted objective: L-BFGS (strong Wolfe
line search) on the atomic positions, in float64, minimising the campaign's objective as predicted
(the acquisition with the MSE metric and λ = 0: a smooth least-squares function, as pdffit2 refines),
with the minimum-distance penalty of the search. Each function evaluation is one forward + backward pass
of the surrogate, counted in ``predicted.surrogate_refine.evaluations`` (the per-calculation accounting
counts it as one PDF calculation).

A refined structure replaces its proposal only if it keeps every minimum distance, lowers the predicted
objective and lies at least ``min_separation`` (RMS) from every evaluated, pending or already chosen
structure (closer, it would be the same structure to the campaign's fingerprint).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field
from pymatgen.core import Structure

from aso_workflows.optimizers.aso.candidates import nearest_rms
from aso_workflows.settings import settings_dataclass

if TYPE_CHECKING:
    import torch

    from aso_workflows.optimizers.aso.acquisition import LowerConfidenceBound
    from aso_workflows.optimizers.aso.proposal import Predictor, Proposal

__all__ = ["SurrogateRefine", "surrogate_is_exact"]


def surrogate_is_exact(models: Mapping[str, Any]) -> bool:
    """True when every model is a physics prior that explained all its training spectra (no residual
    was trained because none was left to learn)."""
    return bool(models) and all(
        hasattr(m, "prior") and not getattr(m, "residual_trained", True) and getattr(m, "fitted", False)
        for m in models.values()
    )


@settings_dataclass
class SurrogateRefine:
    """Settings of the refinement of proposals through the surrogate (module docstring).

    Attributes
    ----------
    when
        ``"exact"``: only when :func:`surrogate_is_exact` (a prior that explains the data); ``"always"``:
        also through a learned residual (the refinement then trusts the surrogate beyond its data);
        ``"never"``.
    max_evaluations
        Surrogate evaluations (forward + backward) per refined proposal (L-BFGS may finish a line search
        a few past it; the count stored is the real one).
    top
        Refine the ``top`` proposals of a batch with the best acquisition (``None``: every
        gradient-searched proposal; fallbacks are never refined).
    min_separation
        Smallest RMS displacement (Å) between a refined structure and any known one; the campaign's
        structure fingerprint rounds fractional coordinates to 1e-4, ~1e-3 Å.
    search
        With an exact surrogate: ``"local"`` replaces the gradient search by L-BFGS from the ``starts``
        best evaluated structures and ``fresh`` new perturbations of the start (multi-start local
        optimisation of a known function: cheaper, and converged); ``"gradient"`` keeps the gradient
        search and refines its proposals.
    starts, fresh
        Starts of the ``"local"`` search.
    """

    when: Literal["exact", "always", "never"] = "exact"
    max_evaluations: Annotated[int, Field(ge=1)] = 60
    top: Annotated[int, Field(ge=1)] | None = None
    min_separation: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 2e-3
    search: Literal["local", "gradient"] = "local"
    starts: Annotated[int, Field(ge=1)] = 8
    fresh: Annotated[int, Field(ge=0)] = 2

    def applies(self, models: Mapping[str, Any]) -> bool:
        """Whether proposals made with ``models`` are refined."""
        return self.when == "always" or (self.when == "exact" and surrogate_is_exact(models))

    def refine(
        self,
        proposals: Sequence[Proposal],
        predict: Mapping[str, Predictor],
        acquisition: LowerConfidenceBound,
        dmin_matrix: np.ndarray,
        others: Sequence[Structure],
        penalty_weight: float = 100.0,
    ) -> list[Proposal]:
        """``proposals`` with the best ``top`` (not fallbacks) refined; each carries
        ``search["surrogate_refine"]`` (``evaluations``, ``objective_before``/``after``, ``used``)."""
        smooth = _smooth(acquisition)
        order = sorted(
            (k for k, p in enumerate(proposals) if not p.fallback), key=lambda k: proposals[k].acquisition
        )
        chosen = set(order if self.top is None else order[: self.top])
        known = list(others) + [p.structure for p in proposals]
        out = []
        for k, p in enumerate(proposals):
            if k in chosen:
                p = self._refine_one(p, predict, smooth, acquisition, dmin_matrix, known, penalty_weight)
                known.append(p.structure)
            out.append(p)
        return out

    def _refine_one(
        self,
        p: Proposal,
        predict: Mapping[str, Predictor],
        smooth: LowerConfidenceBound,
        acquisition: LowerConfidenceBound,
        dmin_matrix: np.ndarray,
        known: list[Structure],
        penalty_weight: float,
    ) -> Proposal:
        structure, info = _lbfgs(
            p.structure, predict, smooth, dmin_matrix, self.max_evaluations, penalty_weight
        )
        if structure is not None and nearest_rms(structure, known) >= self.min_separation:
            info["used"] = True
            return _proposal(structure, predict, acquisition, {**p.search, "surrogate_refine": info}, p)
        return dataclasses.replace(p, search={**p.search, "surrogate_refine": info})

    def search_local(
        self,
        ranked: Sequence[Structure],
        known: Sequence[Structure],
        predict: Mapping[str, Predictor],
        acquisition: LowerConfidenceBound,
        dmin_matrix: np.ndarray,
        q: int,
        fresh: Sequence[Structure] = (),
        penalty_weight: float = 100.0,
        max_ratio: float = 10.0,
    ) -> list[Proposal]:
        """Proposals of an exact surrogate: L-BFGS from the ``starts`` best of ``ranked`` and the ``fresh``
        structures given, then the ``q`` best predicted that are distinct (``min_separation``) from
        ``known`` and from each other and predicted at most ``max_ratio`` × the best evaluated structure's
        objective; fewer (possibly none) when the starts end on known structures or worse ones."""

        import torch

        t0 = time.perf_counter()
        smooth = _smooth(acquisition)
        with torch.no_grad():
            pos = torch.tensor(ranked[0].cart_coords, dtype=torch.float64)[None]
            lat = torch.tensor(ranked[0].lattice.matrix, dtype=torch.float64)[None]
            ceiling = max_ratio * float(_value(smooth, predict, pos, lat)[0])
        from aso_workflows.progress import phase

        starts = list(ranked[: self.starts]) + list(fresh)
        results = []
        total = 0
        desc = (
            f"proposal (L-BFGS through the prior: {len(starts)} starts × ≤{self.max_evaluations} evaluations)"
        )
        with phase(desc, len(starts)) as bar:
            for k, s in enumerate(starts):
                structure, info = _lbfgs(
                    s, predict, smooth, dmin_matrix, self.max_evaluations, penalty_weight
                )
                total += int(info["evaluations"])
                if structure is not None:
                    results.append((info["objective_after"], k, structure))
                bar.update(1, best=min((r[0] for r in results), default=float("nan")))
        results.sort(key=lambda r: r[0])
        search: dict[str, Any] = {
            "phase": "local",
            "n_starts": len(starts),
            "fresh_starts": len(fresh),
            "evaluations": total,
        }
        chosen: list[Proposal] = []
        others = list(known)
        for value, k, structure in results:
            if len(chosen) == q or value > ceiling:
                break
            if nearest_rms(structure, others) < self.min_separation:
                continue
            chosen.append(_proposal(structure, predict, acquisition, search, None, start_index=k))
            others.append(structure)
        search["seconds"] = round(time.perf_counter() - t0, 3)
        return chosen


def _smooth(acquisition: LowerConfidenceBound) -> LowerConfidenceBound:
    """The predicted normalised MSE: ``acquisition`` with metric ``mse`` and λ = 0 (a smooth least-squares
    function, as pdffit2 refines)."""
    from aso_workflows.optimizers.aso.acquisition import LowerConfidenceBound

    return LowerConfidenceBound(
        targets=acquisition._targets,
        weights=acquisition._weights,
        scales=acquisition._scales,
        lam=0.0,
        metric="mse",
    )


def _lbfgs(
    start: Structure,
    predict: Mapping[str, Predictor],
    smooth: LowerConfidenceBound,
    dmin_matrix: np.ndarray,
    max_evaluations: int,
    penalty_weight: float,
) -> tuple[Structure | None, dict[str, Any]]:
    """L-BFGS of the atomic positions of ``start`` on ``smooth`` + the minimum-distance penalty (float64).

    Returns the refined structure (``None`` if it is not finite, not lower or breaks a minimum distance)
    and ``{"evaluations", "objective_before", "objective_after", "seconds", "used": False}``."""

    import torch

    from aso_workflows.optimizers.sampling import min_distance_penalty, violations

    t0 = time.perf_counter()
    lat = torch.tensor(start.lattice.matrix, dtype=torch.float64)[None]
    x0 = torch.tensor(start.cart_coords, dtype=torch.float64)[None]
    dmin = torch.as_tensor(np.asarray(dmin_matrix, dtype=float), dtype=torch.float64)
    x = x0.clone().requires_grad_()
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=max_evaluations,
        max_eval=max_evaluations,
        tolerance_grad=1e-14,
        tolerance_change=1e-18,
        history_size=30,
        line_search_fn="strong_wolfe",
    )
    count = [0]
    with torch.no_grad():
        before = float(_value(smooth, predict, x0, lat)[0])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        count[0] += 1
        value = _value(smooth, predict, x, lat) + penalty_weight * min_distance_penalty(x, lat, dmin)
        value.sum().backward()
        return value.sum()

    opt.step(closure)
    pos = x.detach()
    with torch.no_grad():
        after = float(_value(smooth, predict, pos, lat)[0])
    info: dict[str, Any] = {
        "evaluations": count[0] + 2,  # the two plain evaluations before and after
        "objective_before": before,
        "objective_after": after,
        "seconds": round(time.perf_counter() - t0, 3),
        "used": False,
    }
    ok = bool(torch.isfinite(pos).all()) and after < before and not bool(violations(pos, lat, dmin_matrix)[0])
    if not ok:
        return None, info
    structure = Structure(
        start.lattice, start.species, pos[0].numpy(), coords_are_cartesian=True, to_unit_cell=True
    )
    return structure, info


def _proposal(
    structure: Structure,
    predict: Mapping[str, Predictor],
    acquisition: LowerConfidenceBound,
    search: dict,
    like: Proposal | None,
    start_index: int = 0,
) -> Proposal:
    """A proposal of ``structure`` with the surrogate's prediction and the acquisition there."""
    import torch

    from aso_workflows.optimizers.aso.proposal import Proposal

    pos = torch.tensor(structure.cart_coords, dtype=torch.float64)[None]
    lat = torch.tensor(structure.lattice.matrix, dtype=torch.float64)[None]
    with torch.no_grad():
        means, stds = _predict(predict, pos, lat)
        acq = float(acquisition(means, stds)[0])
    mean = {t: v[0].numpy().astype(float) for t, v in means.items()}
    std = {t: v[0].numpy().astype(float) for t, v in stds.items()}
    if like is not None:
        return dataclasses.replace(
            like, structure=structure, acquisition=acq, mean=mean, std=std, search=search
        )
    return Proposal(
        structure, acq, mean, std, start_index=start_index, parent_index=start_index, search=search
    )


def _predict(
    predict: Mapping[str, Predictor], pos: torch.Tensor, lat: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    means, stds = {}, {}
    for t, fn in predict.items():
        means[t], stds[t] = fn(pos, lat)
    return means, stds


def _value(
    acquisition: LowerConfidenceBound, predict: Mapping[str, Predictor], pos: torch.Tensor, lat: torch.Tensor
) -> torch.Tensor:
    means, stds = _predict(predict, pos, lat)
    return acquisition(means, stds)
