"""Training the stacked ensemble: per-member hold-out splits, the row loss and the training loop.

All ``K`` members train at once (stacked weights, one batched pass per step), each on its own split: the
structures are shuffled once and member ``k`` holds out a window of ``holdout_fraction · n`` of them
starting at ``k·n/K`` (so with ``K = 3`` and a third held out the hold-outs are disjoint, the reference's
k-fold; with more members the windows overlap, each still different). Each member draws its own
minibatches from its own training part. AdamW, L1 loss on standardised targets, one
``ReduceLROnPlateau`` on the members' mean held-out loss (the members share one optimiser), early
stopping per member on its held-out loss keeping its best weights; the loop ends when every member has
run out of patience or at ``epochs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from aso_workflows.progress import phase
from aso_workflows.surrogate.model import EnsembleGNN
from aso_workflows.surrogate.settings import SurrogateSettings
from aso_workflows.surrogate.targets import Targets

__all__ = [
    "member_splits",
    "row_loss",
    "fit_linear_path",
    "RIDGE_PENALTIES",
    "TrainingResult",
    "train_members",
]

#: ridge penalties tried for the linear path, relative to the mean diagonal of the features' Gram matrix
RIDGE_PENALTIES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def member_splits(
    n: int, k: int, holdout_fraction: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``train [K, n − h]`` and ``hold [K, h]`` structure indices of each member (``h`` may be 0)."""
    h = int(round(n * holdout_fraction))
    if h < 1 or n - h < 1:
        h = 0
    perm = torch.randperm(n, generator=gen)
    train, hold = [], []
    for member in range(k):
        start = int(round(member * n / k))
        out = (start + torch.arange(h)) % n
        keep = torch.ones(n, dtype=torch.bool)
        keep[out] = False
        hold.append(perm[out])
        train.append(perm[keep])
    return torch.stack(train), torch.stack(hold)


def row_loss(out: torch.Tensor, ids: torch.Tensor, data: Targets, kind: str) -> torch.Tensor:
    """Per-member mean loss ``[K]`` of the outputs of structures ``ids [K, b]`` against their rows.

    ``out`` is ``[K, b, M]`` (graph level) or ``[K, b, A, M]`` (node level: mapped onto the rows by
    ``data.weights``).
    """
    y, mask = data.y[ids], data.mask[ids]  # [K, b, R, M], [K, b, R]
    pred = out[:, :, None] if data.weights is None else data.weights[ids] @ out
    diff = pred - y
    if kind == "l1":
        err = diff.abs()
    elif kind == "mse":
        err = diff * diff
    else:
        err = F.huber_loss(diff, torch.zeros_like(diff), reduction="none")
    return (err.mean(-1) * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)


@torch.no_grad()
def fit_linear_path(
    model: EnsembleGNN,
    rho: torch.Tensor,
    data: Targets,
    train: torch.Tensor,
    hold: torch.Tensor,
    penalties: tuple[float, ...] = RIDGE_PENALTIES,
) -> list[float]:
    """Start each member's linear path at the ridge regression of its training rows on the readout.

    A PDF is linear in the pair distribution, so the linear path alone can fit it once its weights are
    right; gradient steps from zero take hundreds of epochs to get there, a least-squares solve takes
    one. Per member: the readout features of its training rows (node rows: each row's nodes mapped by
    ``data.weights``) against the standardised rows, centred, solved for every penalty in
    ``penalties`` (× the mean diagonal of the Gram matrix) through one eigendecomposition; the penalty
    with the lowest mean absolute error on the member's held-out structures wins (the largest without
    hold-out). The weights go to ``head_skip``, the intercept to ``head_out``'s bias, and ``head_out``'s
    weights start at zero, so the model starts as the ridge fit and training learns the rest.

    Returns the chosen penalty of every member.
    """
    skip, out = model.head_skip, model.head_out
    assert skip is not None and out.bias is not None, "a linear readout path and a head bias are needed"
    feats = model.readout_features(rho).double()  # [n, F] or [n, A, F]
    x_rows = feats[:, None] if data.weights is None else data.weights.double() @ feats  # [n, R, F]
    y_rows, mask = data.y.double(), data.mask.bool()
    chosen = []
    for k in range(train.shape[0]):
        tr = train[k].to(feats.device)
        x, y = x_rows[tr][mask[tr]], y_rows[tr][mask[tr]]  # [rows, F], [rows, M]
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc = x - x_mean
        evals, evecs = torch.linalg.eigh(xc.T @ xc)
        proj = evecs.T @ (xc.T @ (y - y_mean))  # [F, M]
        scale = float(evals.clamp(min=0).mean())
        ho = hold[k].to(feats.device)
        best: tuple[float, float, torch.Tensor | None] = (math.inf, penalties[-1], None)
        for lam in penalties if ho.numel() else penalties[-1:]:
            w = evecs @ (proj / (evals.clamp(min=0) + lam * max(scale, 1e-30))[:, None])
            if ho.numel():
                node_pred = (feats[ho] - x_mean) @ w + y_mean  # [h, M] or [h, A, M]
                struct = (
                    node_pred
                    if data.calib is None
                    else torch.einsum("ha,ham->hm", data.calib[ho].double(), node_pred)
                )
                err = float((struct - data.target[ho].double()).abs().mean())
            else:
                err = 0.0
            if err < best[0]:
                best = (err, lam, w)
        _, lam, w = best
        assert w is not None, f"member {k}: no penalty gave a finite hold-out error"
        skip.weight[k] = w.to(skip.weight.dtype)
        out.bias[k, 0] = (y_mean - x_mean @ w).to(out.bias.dtype)
        out.weight[k].zero_()
        chosen.append(lam)
    return chosen


@dataclass
class TrainingResult:
    """What the loop reports per member: ``best`` held-out loss ``[K]``, ``best_epoch`` ``[K]`` (0-based;
    −1: the starting weights were never beaten), and the number of epochs run."""

    best: torch.Tensor
    best_epoch: torch.Tensor
    epochs: int


def train_members(
    model: EnsembleGNN,
    basis: torch.Tensor,
    rho: torch.Tensor | None,
    data: Targets,
    train: torch.Tensor,
    hold: torch.Tensor,
    settings: SurrogateSettings,
    gen: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
    desc: str,
    progress: bool,
) -> TrainingResult:
    """Train every member of ``model`` on its split; leaves each member's best weights in the model.

    Parameters
    ----------
    model
        The stacked ensemble (``model(basis, rho, ids)`` gives ``[K, b, ...]`` standardised outputs).
    basis, rho
        The fixed training geometry (dense basis) and its pair-distribution features (or ``None``).
    data
        Standardised targets.
    train, hold
        ``[K, ·]`` structure indices per member (:func:`member_splits`).
    settings
        Optimiser, schedule, loss and stopping settings.
    gen
        Generator of the minibatch order (continues the one that made the splits).
    device, dtype
        Where the model runs.
    desc, progress
        Progress-bar label and whether to show it.
    """
    s = settings
    k, n_hold = train.shape[0], hold.shape[1]
    hold_d = hold.to(device)
    model.requires_grad_(True)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=s.lr_factor, patience=s.lr_patience, min_lr=s.min_lr
    )
    first = None
    if n_hold:  # the starting point is a candidate too (a ridge-started linear path may already be best)
        with torch.no_grad():
            first = row_loss(model(basis, rho, hold_d), hold_d, data, s.loss).cpu()
    kept = _BestWeights.start(params, k, first)
    epochs_run = 0
    with phase(desc, s.epochs, enabled=progress) as bar:
        for epoch in range(s.epochs):
            epochs_run = epoch + 1
            train_loss = _one_epoch(model, opt, basis, rho, data, train, s, gen, device, dtype)
            if n_hold:
                with torch.no_grad():
                    val = row_loss(model(basis, rho, hold_d), hold_d, data, s.loss).cpu()
            else:
                val = train_loss
            kept.update(val, epoch, device)
            sched.step(float(val.mean()))
            bar.update(
                1,
                train=f"{float(train_loss.mean()):.3f}",
                heldout=f"{float(val.mean()):.3f}" if n_hold else "-",
                lr=f"{opt.param_groups[0]['lr']:.1e}",
                done=int((kept.since >= s.patience).sum()),
            )
            if n_hold and bool((kept.since >= s.patience).all()):
                break
    kept.restore()
    model.requires_grad_(False)
    return TrainingResult(best=kept.best, best_epoch=kept.best_epoch, epochs=epochs_run)


def _one_epoch(
    model: EnsembleGNN,
    opt: torch.optim.Optimizer,
    basis: torch.Tensor,
    rho: torch.Tensor | None,
    data: Targets,
    train: torch.Tensor,
    s: SurrogateSettings,
    gen: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One pass of every member over its own training structures in minibatches; the mean loss per
    member ``[K]`` (on the CPU)."""
    k, n_train = train.shape
    order = torch.stack([train[m, torch.randperm(n_train, generator=gen)] for m in range(k)]).to(device)
    running = torch.zeros(k, device=device, dtype=dtype)
    for start in range(0, n_train, s.batch_size):
        ids = order[:, start : start + s.batch_size]
        loss = row_loss(model(basis, rho, ids), ids, data, s.loss)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        running += loss.detach() * ids.shape[1]
    return (running / n_train).cpu()


@dataclass
class _BestWeights:
    """Each member's best held-out loss so far, its epoch, the epochs since, and its weights then."""

    params: list[torch.nn.Parameter]
    best: torch.Tensor
    best_epoch: torch.Tensor
    since: torch.Tensor
    state: list[torch.Tensor]

    @classmethod
    def start(cls, params: list[torch.nn.Parameter], k: int, first: torch.Tensor | None) -> _BestWeights:
        """Nothing seen yet, or the untrained model's held-out loss ``first`` (epoch −1)."""
        best = torch.full((k,), math.inf) if first is None else first
        best_epoch = torch.full((k,), -1 if first is not None else 0, dtype=torch.long)
        since = torch.zeros(k, dtype=torch.long)
        return cls(params, best, best_epoch, since, [p.detach().clone() for p in params])

    def update(self, val: torch.Tensor, epoch: int, device: torch.device) -> None:
        """Keep the weights of the members whose held-out loss ``val`` improved at ``epoch``."""
        improved = val < self.best
        self.best = torch.where(improved, val, self.best)
        self.best_epoch = torch.where(improved, torch.tensor(epoch), self.best_epoch)
        self.since = torch.where(improved, torch.zeros_like(self.since), self.since + 1)
        if bool(improved.any()):
            sel = improved.to(device)
            with torch.no_grad():
                for b, p in zip(self.state, self.params, strict=True):
                    b[sel] = p[sel]

    def restore(self) -> None:
        """Put each member's best weights back into the model."""
        with torch.no_grad():
            for b, p in zip(self.state, self.params, strict=True):
                p.copy_(b)
