"""Acquisition functions on surrogate predictions of spectra (lower is better).

Shaped like BoTorch's ``acquisition`` package — a small abstract base and implementations — but acting
on per-technique predicted spectra (mean and ensemble spread) rather than on a scalar GP posterior, so
BoTorch's classes do not apply directly.

The objective of a campaign is a weighted sum over techniques of a normalised mismatch between the
simulated spectrum and the target. The acquisition mirrors it with the surrogate's prediction:

``a(X) = Σ_t w_t [ D(μ_t(X), S*_t) − λ·U(σ_t(X)) ] / n_t``

- ``metric="mae"`` (reference): ``D = mean|μ − S*|``, ``U = mean σ``, ``n_t = scale_t``.
- ``metric="mse"``: ``D = mean (μ − S*)²``, ``U = mean σ²``, ``n_t = scale_t²``. Under a Gaussian
  predictive distribution the expected squared error is ``(μ − S*)² + σ²``; the optimistic bound
  subtracts ``λσ²`` instead, and squaring both the spread and the scale keeps every term in the units of
  the MSE objective, so the two metrics differ only in the power they use.

``scale_t`` defaults to the RMS spread of the target spectrum (its standard deviation over the grid), so
that techniques with different units (G(r) in Å⁻², χ(k), normalised μ(E)) add up on equal terms.

torch is imported where it is used: reading a campaign file (which validates :class:`LCBSchedule`) does
not load it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field

from aso_workflows.errors import InputError
from aso_workflows.settings import settings_dataclass

if TYPE_CHECKING:
    import torch

__all__ = [
    "AcquisitionFunction",
    "LowerConfidenceBound",
    "ExpectedMismatch",
    "LCBSchedule",
    "rms_spread",
]


def rms_spread(target: Any) -> float:
    """RMS deviation of a spectrum from its own mean over the grid (its standard deviation)."""
    import torch

    t = torch.as_tensor(target, dtype=torch.float64)
    return float(torch.sqrt(torch.mean((t - t.mean()) ** 2)))


class AcquisitionFunction(ABC):
    """Scores a batch of candidates from the surrogate's predictions; lower is better.

    Subclasses implement ``__call__(means, stds) -> Tensor[B]`` where ``means[t]`` and ``stds[t]`` are the
    predicted spectrum of technique ``t`` and its uncertainty, ``[B, M_t]``. The result must be
    differentiable w.r.t. the predictions (the proposal optimiser descends its gradient).
    """

    @abstractmethod
    def __call__(self, means: Mapping[str, torch.Tensor], stds: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Acquisition value of each of the B candidates, ``Tensor[B]``."""


@dataclass
class LowerConfidenceBound(AcquisitionFunction):
    """Optimistic (lower) confidence bound of the normalised spectral mismatch.

    Attributes
    ----------
    targets
        Target spectrum per technique, each ``[M_t]`` on the surrogate's output grid (tensor or array).
    weights
        Weight per technique (default 1 for each).
    scales
        Normalisation per technique (default: :func:`rms_spread` of the target).
    lam
        Exploration weight λ (reference 0.1); 0 is pure exploitation.
    metric
        ``"mae"`` (reference) or ``"mse"``; see the module docstring.
    """

    targets: Mapping[str, Any]
    weights: Mapping[str, float] | None = None
    scales: Mapping[str, float] | None = None
    lam: float = 0.1
    metric: Literal["mae", "mse"] = "mae"
    _targets: dict[str, torch.Tensor] = field(init=False, repr=False)
    _weights: dict[str, float] = field(init=False, repr=False)
    _scales: dict[str, float] = field(init=False, repr=False)
    _on_device: dict[tuple, torch.Tensor] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        if not self.targets:
            raise InputError("acquisition.targets", "expected at least one technique with a target spectrum")
        if self.metric not in ("mae", "mse"):
            raise InputError("acquisition.metric", f"expected 'mae' or 'mse', got {self.metric!r}")
        if self.lam < 0:
            raise InputError("acquisition.lam", f"expected λ >= 0, got {self.lam}")
        self._targets = {}
        for t, v in self.targets.items():
            tt = torch.as_tensor(np.asarray(v, dtype=np.float64) if not torch.is_tensor(v) else v)
            if tt.ndim != 1 or len(tt) == 0 or not torch.isfinite(tt).all():
                raise InputError(
                    f"acquisition.targets[{t}]",
                    f"expected a finite 1-D spectrum, got shape {tuple(tt.shape)}",
                )
            self._targets[t] = tt.detach().to(torch.float64)
        for name, given in (("weights", self.weights), ("scales", self.scales)):
            extra = set(given or {}) - set(self._targets)
            if extra:
                raise InputError(
                    f"acquisition.{name}",
                    f"unknown technique(s) {sorted(extra)}; targets: {sorted(self._targets)}",
                )
        self._weights = {t: float((self.weights or {}).get(t, 1.0)) for t in self._targets}
        self._scales = {}
        for t, tgt in self._targets.items():
            s = float(self.scales[t]) if self.scales and t in self.scales else rms_spread(tgt)
            if not s > 0:
                raise InputError(
                    f"acquisition.scales[{t}]", f"expected a positive scale (a flat target has none), got {s}"
                )
            self._scales[t] = s

    @property
    def techniques(self) -> list[str]:
        """The techniques this acquisition needs predictions for."""
        return list(self._targets)

    def terms(
        self, means: Mapping[str, torch.Tensor], stds: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The weighted, normalised contribution ``[B]`` of each technique (they sum to the acquisition)."""
        out: dict[str, torch.Tensor] = {}
        for t, target in self._targets.items():
            if t not in means:
                raise InputError("acquisition", f"no prediction for technique {t!r} (got {sorted(means)})")
            mu = means[t]
            if mu.shape[-1] != target.shape[0]:
                raise InputError(
                    f"acquisition.targets[{t}]",
                    f"target has {target.shape[0]} points but the prediction has {mu.shape[-1]}",
                )
            tgt = self._target_on(t, mu)
            power = 1 if self.metric == "mae" else 2
            mismatch = (mu - tgt).abs().pow(power).mean(-1)
            if self.lam:
                if t not in stds:
                    raise InputError("acquisition", f"no uncertainty for technique {t!r} (needed for λ > 0)")
                mismatch = mismatch - self.lam * stds[t].pow(power).mean(-1)
            out[t] = self._weights[t] * mismatch / self._scales[t] ** power
        return out

    def __call__(self, means: Mapping[str, torch.Tensor], stds: Mapping[str, torch.Tensor]) -> torch.Tensor:
        import torch

        return torch.stack(list(self.terms(means, stds).values())).sum(0)

    def _target_on(self, technique: str, like: torch.Tensor) -> torch.Tensor:
        """The target of ``technique`` on ``like``'s device and dtype, copied there once (a search calls
        the acquisition at every step; a host-to-device copy per step would wait for the device)."""
        key = (technique, like.device, like.dtype)
        if key not in self._on_device:
            self._on_device[key] = self._targets[technique].to(dtype=like.dtype, device=like.device)
        return self._on_device[key]

    def with_lam(self, lam: float) -> LowerConfidenceBound:
        """The same acquisition with exploration weight ``lam`` (e.g. from :meth:`LCBSchedule.lam_at`)."""
        return LowerConfidenceBound(
            targets=self._targets, weights=self._weights, scales=self._scales, lam=lam, metric=self.metric
        )


@dataclass
class ExpectedMismatch(LowerConfidenceBound):
    """Pure exploitation: the predicted normalised mismatch (the LCB with λ = 0)."""

    lam: float = field(default=0.0, init=False)


@settings_dataclass
class LCBSchedule:
    """Exploration weight over a campaign: λ until the last ``exploit_last`` simulations, then 0.

    Attributes
    ----------
    lam
        Exploration weight λ (reference 0.1).
    exploit_last
        Number of simulations at the end of the budget proposed by pure exploitation (reference 20).
    """

    lam: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.1
    exploit_last: Annotated[int, Field(ge=0)] = 20

    def exploiting(self, n_used: int, budget: int) -> bool:
        """True in the exploitation phase: the next simulation (number ``n_used + 1``) lies among the
        last ``exploit_last`` of the budget, i.e. ``budget − n_used <= exploit_last``.

        The proposal optimiser searches harder there (the reference: 1024 starts × 1000 steps instead of
        128 × 100; :meth:`~aso_workflows.optimizers.aso.proposal.GradientProposer.search_size`).
        """
        return budget - n_used <= self.exploit_last

    def lam_at(self, n_used: int, budget: int) -> float:
        """λ for the next proposal, after ``n_used`` of ``budget`` simulations: 0 in the exploitation
        phase (:meth:`exploiting`), else ``lam``. A batch of q proposals takes the λ of its first member.
        """
        return 0.0 if self.exploiting(n_used, budget) else self.lam

    def acquisition(self, base: LowerConfidenceBound, n_used: int, budget: int) -> LowerConfidenceBound:
        """``base`` with the scheduled λ."""
        return base.with_lam(self.lam_at(n_used, budget))
