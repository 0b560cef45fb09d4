"""Calibrating the ensemble spread and scoring the fit.

The ensemble spread ``σ`` (standard deviation over members) is rescaled by one scalar ``s``: for each
structure held out by at least one member, ``e`` is its target minus the mean of the members that did
not see it (for node-level models: the structure-level quantity, the mean over its rows), and ``s``
maximises the Gaussian likelihood of those errors under ``N(0, s²(σ² + ε²))`` over all held-out
structures and output points; the closed form is ``s² = mean(e² / (σ² + ε²))``. ``ε``
(``calibration_floor``, in standardised units) keeps points where all members agree exactly from
dominating; the predicted spread is ``s·sqrt(σ² + ε²)`` accordingly (without ``ε`` a fit whose members
agree far better than ``ε`` would get a spread far below its errors). Errors of a partial ensemble are
somewhat larger than those of the full one, so ``s`` errs on the wide (exploratory) side.
"""

from __future__ import annotations

from typing import Any

import torch

from aso_workflows.surrogate.targets import Targets

__all__ = ["calibrate_and_score"]


@torch.no_grad()
def calibrate_and_score(
    out: torch.Tensor,
    data: Targets,
    train: torch.Tensor,
    hold: torch.Tensor,
    floor: float,
) -> tuple[float, dict[str, Any]]:
    """The calibration scale and the fit's metrics.

    Parameters
    ----------
    out
        Standardised outputs of every member on every training structure: ``[K, n, M]`` (graph level)
        or ``[K, n, A, M]`` (node level).
    data
        The standardised targets.
    train, hold
        ``[K, ·]`` structure indices per member.
    floor
        ``ε`` (standardised units).

    Returns
    -------
    tuple
        ``(s, metrics)``; metrics as documented in
        :meth:`~aso_workflows.surrogate.ensemble.EnsembleSurrogate.fit` (without the training counts).
    """
    k, n = out.shape[0], out.shape[1]
    device, dtype = out.device, out.dtype
    # row-level predictions [K, n, R, M] and the structure-level quantity [K, n, M]
    if data.weights is None:
        rows, struct = out[:, :, None], out
    else:
        rows = data.weights @ out
        struct = torch.einsum("na,knam->knm", data.calib, out)
    abs_err = (rows - data.y).abs().mean(-1) * data.mask  # [K, n, R]
    scale = data.scale

    def mae(member: int, idx: torch.Tensor) -> float | None:
        if idx.numel() == 0:
            return None
        idx = idx.to(device)
        return float(abs_err[member, idx].sum() / data.mask[idx].sum()) * scale

    members = [{"train_mae": mae(m, train[m]), "heldout_mae": mae(m, hold[m])} for m in range(k)]
    ens_err = (rows.mean(0) - data.y).abs().mean(-1) * data.mask
    valid = data.mask.sum()
    metrics: dict[str, Any] = {
        "members": members,
        "train_mae": float(ens_err.sum() / valid) * scale,
        # the error of always predicting the mean, for the structure-level quantity that heldout_mae
        # measures (at node level the rows vary far more than their mean)
        "target_mad": float((data.target - data.target.mean(0)).abs().mean()) * scale,
    }
    held = torch.zeros(k, n, dtype=torch.bool, device=device)
    for m in range(k):
        held[m, hold[m].to(device)] = True
    seen = held.any(0)
    calibration = 1.0
    metrics.update(heldout_mae=None, calibration_scale=1.0, coverage_1sigma=None)
    if bool(seen.any()):
        hw = held[:, seen].to(dtype)[..., None]  # [K, h, 1]
        mu = (struct[:, seen] * hw).sum(0) / hw.sum(0)
        err = data.target[seen] - mu
        metrics["heldout_mae"] = float(err.abs().mean()) * scale
        if k > 1:
            sigma = struct[:, seen].std(0, correction=0)
            ratio = err**2 / (sigma**2 + floor**2)
            calibration = float(torch.sqrt(ratio.mean()))
            metrics["calibration_scale"] = calibration
            spread = calibration * torch.sqrt(sigma**2 + floor**2)  # the predictive σ (see predict_torch)
            metrics["coverage_1sigma"] = float((err.abs() <= spread).to(dtype).mean())
    return calibration, metrics
