"""The campaign's history as rows: one per evaluation, and the surrogate's accuracy per iteration."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from aso_workflows.campaign.state import CampaignState

__all__ = ["HISTORY_COLUMNS", "history_rows", "surrogate_accuracy_rows", "pairs_by_iteration"]

HISTORY_COLUMNS = (
    "n_simulations",
    "iteration",
    "candidate",
    "kind",
    "status",
    "failure_kind",
    "objective",
    "best_objective",
    "predicted_objective",
    "acquisition",
    "fingerprint",
    "error",
)


def _predicted_objectives(state: CampaignState) -> dict[str, float]:
    """The surrogate's predicted mismatch of each proposal that has one, by proposal id."""
    out = {}
    for p in state.proposal_docs():
        value = (p.predicted or {}).get("objective")
        if value is not None:
            out[p.id] = float(value)
    return out


def history_rows(state: CampaignState) -> list[dict]:
    """One row per evaluation in order: iteration, candidate, kind, status, objective, best so far, MSEs,
    Rw/R per technique and the fitted nuisance parameters.

    Two queries in all (evaluations, proposals), so it stays fast on a remote MongoDB with thousands of
    evaluations.
    """
    proposals = {p.id: p for p in state.proposal_docs()}
    rows = []
    best = np.inf
    n = 0
    for e in state.evaluation_docs():
        if e.status == "completed":
            n += 1
            assert e.objective is not None  # a completed evaluation has an objective
            best = min(best, e.objective)
        prop = proposals.get(e.proposal_id)
        row = {
            "n_simulations": n,
            "iteration": e.iteration,
            "candidate": e.candidate,
            "kind": e.kind,
            "status": e.status,
            "failure_kind": e.failure_kind or "",
            "objective": e.objective,
            "best_objective": best if np.isfinite(best) else None,
            "predicted_objective": ((prop.predicted or {}).get("objective") if prop else None),
            "acquisition": prop.acquisition if prop else None,
            "fingerprint": e.fingerprint,
            "error": e.error or "",
        }
        for t, v in e.mse.items():
            row[f"mse_{t}"] = v
        for t, g in e.goodness.items():  # Rw (PDF) / R (XAS) next to the objective
            row[f"{g.name}_{t}"] = g.value
        for t, f in e.fit.items():  # fitted nuisance parameters
            for name, v in f.parameters.items():
                row[f"fit_{t}_{name}"] = v
        rows.append(row)
    return rows


def surrogate_accuracy_rows(state: CampaignState) -> list[dict]:
    """Per iteration: predicted vs simulated mismatch of its candidates, and the ensembles' metrics.

    The candidates of iteration *k* were proposed with the ensembles trained at the end of iteration
    *k − 1*, so row *k* carries those models' ``heldout_mae_<technique>`` / ``coverage_<technique>``.
    """
    predicted = _predicted_objectives(state)
    if not predicted:
        return []
    pairs: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for it, pred, sim in pairs_by_iteration(state, predicted):
        pairs[it].append((pred, sim))
    models: dict[int, dict] = defaultdict(dict)
    for m in state.model_docs():
        models[m.iteration][m.technique] = m
    rows = []
    for it in sorted(pairs):
        p = np.array(pairs[it])
        row = {
            "iteration": it,
            "n_candidates": len(p),
            "predicted_mean": float(p[:, 0].mean()),
            "simulated_mean": float(p[:, 1].mean()),
            "mae": float(np.abs(p[:, 0] - p[:, 1]).mean()),
            "relative_error": float(np.mean(np.abs(p[:, 0] - p[:, 1]) / np.maximum(p[:, 1], 1e-300))),
            "best_simulated": float(p[:, 1].min()),
            "rank_correlation": _spearman(p[:, 0], p[:, 1]),
            "model_iteration": it - 1 if (it - 1) in models else None,
        }
        for technique, m in sorted(models.get(it - 1, {}).items()):
            row[f"heldout_mae_{technique}"] = m.metrics.get("heldout_mae")
            row[f"coverage_{technique}"] = m.metrics.get("coverage_1sigma")
            row["n_train"] = m.n_train
        rows.append(row)
    return rows


def _spearman(predicted: np.ndarray, simulated: np.ndarray) -> float | None:
    """Spearman rank correlation (does the surrogate order the candidates right?); None below 3 pairs."""
    if len(predicted) < 3 or np.ptp(predicted) == 0 or np.ptp(simulated) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(predicted, simulated).statistic)


def pairs_by_iteration(
    state: CampaignState, predicted: dict[str, float] | None = None
) -> list[tuple[int, float, float]]:
    """(iteration, predicted, simulated) of every evaluated candidate that has a prediction."""
    predicted = _predicted_objectives(state) if predicted is None else predicted
    out = []
    for e in state.evaluation_docs("completed"):
        p = predicted.get(e.proposal_id)
        if p is not None:
            assert e.objective is not None  # a completed evaluation has an objective
            out.append((e.iteration, p, float(e.objective)))
    return sorted(out)


# ---- structure descriptors ------------------------------------------------------------------------------
