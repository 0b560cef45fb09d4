"""The structure-determination benchmark's accountings: what a run costs, and its curves per cost.

Accountings (x axes). ``<method>``: simulated structures (campaign evaluations). ``<method>/calc``:
simulator calculations (pdffit2 calls with derivatives, refinement steps, finite-difference Jacobians'
forward runs, the node-level surrogate's per-atom rows). ``<method>/fd``: every pdffit2 calculation with
derivatives counted as P + 1 forward calls. Also the summaries over runs at equal cost (medians, ASO's
ratios and wins, the surrogate's accuracy, the issue's targets).
"""

from __future__ import annotations

import numpy as np

from sdbench.suites import SuiteSettings, base_method

__all__ = [
    "CALC_METHODS",
    "FD_METHODS",
    "CALC_ONLY",
    "evaluation_costs",
    "surrogate_accuracy",
    "median_at",
    "summarise",
    "accounting_views",
    "per_calculation",
    "equal_cost_rows",
    "accuracy_table",
    "check_targets",
]

#: methods whose proposals spend simulator calculations of their own (pdffit2 refine steps, lsq's
#: Jacobians, the node-level surrogate's per-atom rows): their runs are also shown re-indexed by
#: calculations (``<method>/calc``)
CALC_METHODS = ("diffpy", "aso-refine", "aso", "aso-polish", "lsq")
#: the refinements a proposal may carry (``predicted.<key>.pdf_calculations``)
_REFINEMENTS = ("refine", "refine_best", "polish")
#: methods that use analytic derivatives: also shown as if they were finite differences (``/fd``)
FD_METHODS = ("diffpy", "aso-refine", "aso-polish")
#: methods shown only per calculation: one lsq evaluation stands for 1 + its Jacobian's forward runs
CALC_ONLY = ("lsq",)


def evaluation_costs(state) -> dict[str, list[float]]:
    """Cumulative simulator calculations after each completed evaluation (chronological order).

    ``calc``: one per evaluation, except a DiffPy evaluation (its pdffit2 calls, each a PDF with analytic
    derivatives, stand for the simulation), an aso-refine or polish evaluation (1 + its refinements'
    pdffit2 calls),
    an lsq evaluation (1 + its Jacobian's forward runs) and, for the node-level PDF surrogate, the
    per-atom rows (their pdffit2 time over the G(r) calculation's: "G(r)-equivalents").
    ``fd``: the same with every pdffit2 calculation with derivatives counted as P + 1 forward calls (P
    refined parameters; the first calculation of a refinement, which also evaluates its start, counts
    two, so this slightly overcounts). A failed evaluation's cost is carried to the next completed one.
    """
    proposals = {
        p["_id"]: p.get("predicted") or {}
        for p in state.db.proposals.find(
            {"campaign": state.name},
            {
                "predicted.diffpy": 1,
                "predicted.refine": 1,
                "predicted.refine_best": 1,
                "predicted.polish": 1,
                "predicted.lsq": 1,
                "predicted.search": 1,
            },
        )
    }
    passes = _prior_passes(state, proposals)
    calc, fd, out_calc, out_fd = 0.0, 0.0, [], []
    for e in state.evaluations(status=None):
        pred = proposals.get(str(e.get("proposal_id")), {})
        rows = _site_row_equivalents(state, e)
        if e.get("kind") == "diffpy" and pred.get("diffpy"):
            n, p = int(pred["diffpy"].get("pdf_calculations", 1)), int(pred["diffpy"].get("parameters", 0))
            c, f = n, n * (p + 1)
        elif any(pred.get(k) for k in _REFINEMENTS):
            c = f = 1 + rows
            for k in _REFINEMENTS:  # pdffit2 refinements before the simulation (aso-refine, polish)
                n, p = (
                    int((pred.get(k) or {}).get("pdf_calculations", 0)),
                    int((pred.get(k) or {}).get("parameters", 0)),
                )
                c, f = c + n, f + n * (p + 1)
        elif pred.get("lsq"):
            c = f = 1 + int(pred["lsq"].get("jacobian_calls", 0) or 0)
        else:
            c = f = 1 + rows
        extra = passes.get(str(e.get("proposal_id")), 0.0)
        calc, fd = calc + c + extra, fd + f + extra * (3 * len(state.species) + 1)
        if e["status"] == "completed":
            out_calc.append(round(calc, 3))
            out_fd.append(round(fd, 3))
    return {"calc": out_calc, "fd": out_fd}


def _prior_passes(state, proposals: dict[str, dict]) -> dict[str, float]:
    """Forward + backward passes of the torch PDF model spent on each proposal, where the campaign's PDF
    surrogate uses it (issue 20: each pass of one structure counts as one PDF calculation): the batch's
    gradient search (starts × (steps + 1), carried by the batch's first proposal) and each proposal's
    refinement through the surrogate (``search.surrogate_refine.evaluations``). 0 for other surrogates."""
    models = list(state.db.models.find({"campaign": state.name, "technique": "pdf"}, {"metrics.prior": 1}))
    if not any((m.get("metrics") or {}).get("prior") for m in models):
        return {}
    out: dict[str, float] = {}
    seen: set[tuple] = set()
    for pid, pred in proposals.items():
        search = pred.get("search") or {}
        cost = float((search.get("surrogate_refine") or {}).get("evaluations", 0))
        key = (pid.rsplit(":", 1)[0], search.get("n_starts"), search.get("steps"), search.get("seconds"))
        if search.get("n_starts") and key not in seen:  # one search per batch (iteration)
            seen.add(key)
            if search.get("phase") == "local":  # L-BFGS from several starts through the exact surrogate
                cost += float(search.get("evaluations", 0))
            else:
                cost += float(search["n_starts"]) * (float(search.get("steps", 0)) + 1)
        out[pid] = cost
    return out


def _site_row_equivalents(state, evaluation: dict) -> float:
    """The per-atom PDF rows' cost of one evaluation in G(r) calculations (their pdffit2 time over the
    G(r) calculation's), 0 without rows."""
    cid = (evaluation.get("simulated_spectra") or {}).get("pdf")
    if not cid or not cid.endswith(":sites"):
        return 0.0
    doc = state.db.spectra.find_one({"_id": cid}, {"spectrum.extra": 1}) or {}
    info = ((doc.get("spectrum") or {}).get("extra") or {}).get("site_contributions") or {}
    if not info.get("total_seconds"):
        return 0.0
    return float(info["seconds"]) / float(info["total_seconds"])


def surrogate_accuracy(models: list[dict]) -> list[dict]:
    """Per trained model (iteration, technique): the fit's held-out MAE/MAD (structures held out by the
    members, against the members that did not see them; 1 = no better than the mean spectrum) and its
    calibration (scale, share of held-out errors within ±1 calibrated σ)."""
    out = []
    for m in sorted(models, key=lambda d: (d["iteration"], d["technique"])):
        met = m.get("metrics") or {}
        mae, mad = met.get("heldout_mae"), met.get("target_mad")
        out.append(
            {
                "iteration": m["iteration"],
                "technique": m["technique"],
                "n_train": m.get("n_train"),
                "heldout_mae_over_mad": mae / mad if mae is not None and mad else None,
                "calibration_scale": met.get("calibration_scale"),
                "coverage_1sigma": met.get("coverage_1sigma"),
            }
        )
    return out


def median_at(runs: list[dict], n: int, relative: bool) -> float:
    vals = [r["curve"][n - 1] / (r["start_objective"] if relative else 1.0) for r in runs]
    return float(np.median(vals)) if vals else float("nan")


def summarise(runs: list[dict], methods: list[str], s: SuiteSettings) -> list[dict]:
    """One table row per method: medians at the checkpoints, ratio ASO/method, ASO's wins."""
    by = {m: [r for r in runs if r["method"] == m] for m in methods}
    aso = {(r["case"], r["seed"]): r for r in by.get("aso", [])}
    rows = []
    for m in methods:
        rs = by[m]
        if not rs:
            continue
        row: dict = {"method": m, "runs": len(rs)}
        for n in s.checkpoints():
            row[f"median_best@{n}"] = median_at(rs, n, False)
            row[f"median_rel@{n}"] = median_at(rs, n, True)
            if aso and m != "aso":
                pairs = [(aso[k], r) for r in rs if (k := (r["case"], r["seed"])) in aso]
                row[f"aso/{m}@{n}"] = median_at([a for a, _ in pairs], n, True) / median_at(
                    [r for _, r in pairs], n, True
                )
                row[f"aso_wins@{n}"] = (
                    f"{sum(a['curve'][n - 1] < r['curve'][n - 1] for a, r in pairs)}/{len(pairs)}"
                )
        row["median_wall_s"] = float(np.median([r["wall_s"] for r in rs]))
        n_prop = sum(r.get("n_proposed", 0) for r in rs)
        row["fallbacks"] = f"{sum(r.get('n_fallback', 0) for r in rs)}/{n_prop}" if n_prop else "—"
        rows.append(row)
    return rows


def accounting_views(ok: list[dict], methods: list[str], budget: int) -> tuple[list[dict], list[str]]:
    """Every run in each accounting it is shown in, and the method labels in table order.

    ``<method>``: per simulated structure (not for :data:`CALC_ONLY` methods); ``<method>/calc`` where a
    method spends calculations beyond its simulations; ``<method>/fd`` for :data:`FD_METHODS`.
    """
    views: list[dict] = []
    for r in ok:
        base = base_method(r["method"])
        if base not in CALC_ONLY:
            views.append(r)
        calc = r.get("calc") or r.get("pdf_calculations")
        if (
            base in CALC_METHODS
            and calc
            and (base in CALC_ONLY or list(calc) != list(range(1, len(calc) + 1)))
        ):
            views.append(per_calculation(r, budget, calc, "calc"))
        if base in FD_METHODS and r.get("fd"):
            views.append(per_calculation(r, budget, r["fd"], "fd"))
    present = {v["method"] for v in views}
    shown = [m for m in methods if m in present]
    for suffix in ("calc", "fd"):
        shown += [f"{m}/{suffix}" for m in methods if f"{m}/{suffix}" in present]
    return views, shown


def per_calculation(r: dict, budget: int, calc: list, suffix: str = "calc") -> dict:
    """A run re-indexed by calculations instead of simulated structures: best mismatch among the
    structures reached within n calculations (the start's mismatch before any)."""
    curve = r["curve"]
    out = []
    for n in range(1, budget + 1):
        within = [curve[i] for i in range(min(len(calc), len(curve))) if calc[i] <= n + 1e-9]
        out.append(min(within) if within else r["start_objective"])
    return {**r, "method": f"{r['method']}/{suffix}", "curve": out, "best": out[-1]}


def equal_cost_rows(runs: list[dict], methods: list[str], xs: list[int], strata: dict | None) -> list[dict]:
    """Median best/start of every accounting at ``xs`` simulator calculations, past the budget.

    A run's own spend decides how far it is known: a run that ended before ``n`` calculations (DiffPy
    stops at its budget of simulated structures, after fewer calculations than an ASO run with per-atom
    rows) is counted with its last value, an upper bound (``reached`` < ``runs``). Per-simulation
    methods (random, RMC, GP-BO) are known up to the budget only.
    """
    rows = []
    groups = [("all", None)] + ([("near", "near"), ("far", "far")] if strata else [])
    labels: list[tuple[str, str, str]] = []  # (label, method, accounting)
    for m in methods:
        base = base_method(m)
        if base not in CALC_ONLY:
            labels.append((m if base not in CALC_METHODS else f"{m} (per simulation)", m, "sim"))
        if base in CALC_METHODS:
            labels.append((f"{m}/calc", m, "calc"))
        if base in FD_METHODS:
            labels.append((f"{m}/fd", m, "fd"))
    for gname, g in groups:
        for label, m, acc in labels:
            rs = [r for r in runs if r["method"] == m and (g is None or (strata or {}).get(r["case"]) == g)]
            if not rs:
                continue
            row: dict = {"label": label, "accounting": acc, "stratum": gname, "runs": len(rs)}
            for n in xs:
                vals, reached = [], 0
                for r in rs:
                    curve = r["curve"]
                    cost = (
                        list(range(1, len(curve) + 1)) if acc == "sim" else (r.get(acc) or [])[: len(curve)]
                    )
                    if not cost:
                        continue
                    within = [curve[i] for i, c in enumerate(cost) if c <= n + 1e-9]
                    vals.append((min(within) if within else r["start_objective"]) / r["start_objective"])
                    reached += cost[-1] >= n
                row[f"rel@{n}"] = float(np.median(vals)) if vals else None
                row[f"reached@{n}"] = f"{reached}/{len(rs)}"
            rows.append(row)
    return rows


def accuracy_table(runs: list[dict], strata: dict | None) -> list[dict]:
    """The surrogate's held-out MAE/MAD and ±1σ coverage per method (and stratum): median over runs at
    the first training, the middle one and the last."""
    rows = []
    groups = [("all", None)] + ([("near", "near"), ("far", "far")] if strata else [])
    for m in sorted({r["method"] for r in runs if r.get("surrogate_accuracy")}):
        for gname, g in groups:
            rs = [
                r
                for r in runs
                if r["method"] == m
                and r.get("surrogate_accuracy")
                and (g is None or (strata or {}).get(r["case"]) == g)
            ]
            if not rs:
                continue
            row = {"method": m, "stratum": gname, "runs": len(rs)}
            for where, pick in (("first", 0), ("middle", None), ("last", -1)):
                vals, cov, ntr = [], [], []
                for r in rs:
                    acc = [a for a in r["surrogate_accuracy"] if a.get("heldout_mae_over_mad") is not None]
                    if not acc:
                        continue
                    a = acc[len(acc) // 2] if pick is None else acc[pick]
                    vals.append(a["heldout_mae_over_mad"])
                    ntr.append(a.get("n_train") or 0)
                    if a.get("coverage_1sigma") is not None:
                        cov.append(a["coverage_1sigma"])
                row[f"n_train_{where}"] = float(np.median(ntr)) if ntr else None
                row[f"mae_over_mad_{where}"] = float(np.median(vals)) if vals else None
                row[f"coverage_{where}"] = float(np.median(cov)) if cov else None
            rows.append(row)
    return rows


def _rel(
    views: list[dict], method: str, n: int, stratum: str | None, strata: dict | None
) -> tuple[float, int]:
    rs = [
        v
        for v in views
        if v["method"] == method and (stratum is None or (strata or {}).get(v["case"]) == stratum)
    ]
    return median_at(rs, n, True), len(rs)


def check_targets(views: list[dict], budget: int, strata: dict | None, technique: str = "pdf") -> dict:
    """The issue's targets at ``budget``, on the median over cases × seeds of best/start.

    - near and far: ASO at least 5× below random, RMC and GP-BO (ratio method/ASO ≥ 5);
    - far: ASO or aso-refine below DiffPy in every accounting (per simulation: aso vs diffpy; per
      calculation: aso/calc, aso-refine/calc vs diffpy/calc; finite differences: aso/calc,
      aso-refine/fd vs diffpy/fd);
    - near: aso-refine within 2× of DiffPy per PDF calculation (aso-refine/calc ≤ 2 × diffpy/calc);
    - XAS (no strata): ASO at least 10× below RMC and below lsq at equal FEFF runs.
    """
    out: dict = {"budget": budget, "statistic": "median over cases x seeds of best/start", "checks": []}

    def add(stratum, what, ours, theirs, goal, ok_fn):
        (a, na), (b, nb) = ours, theirs
        if not (na and nb) or not (np.isfinite(a) and np.isfinite(b)):
            return
        out["checks"].append(
            {
                "stratum": stratum,
                "check": what,
                "ours": a,
                "theirs": b,
                "ratio_theirs_over_ours": b / a if a > 0 else float("inf"),
                "goal": goal,
                "met": bool(ok_fn(a, b)),
                "runs": [na, nb],
            }
        )

    def aso_calc(st):  # ASO per calculation: its simulations plus the per-atom rows, if it has any
        v = _rel(views, "aso/calc", budget, st, strata)
        return v if v[1] else _rel(views, "aso", budget, st, strata)

    if technique != "pdf":
        aso = _rel(views, "aso", budget, None, strata)
        _reach_check(out, views, budget)
        for m, factor in (("rmc", 10), ("random", 5), ("gpbo", 5)):
            add(
                "all",
                f"aso vs {m} (>= {factor}x lower)",
                aso,
                _rel(views, m, budget, None, strata),
                f">= {factor}",
                lambda a, b, factor=factor: b >= factor * a,
            )
        for m in ("lsq/calc", "lsq-block4/calc"):
            add(
                "all",
                f"aso vs {m} at equal FEFF runs",
                aso,
                _rel(views, m, budget, None, strata),
                "< 1x",
                lambda a, b: a < b,
            )
        return out

    for st in ("near", "far"):
        aso = _rel(views, "aso", budget, st, strata)
        for m in ("random", "rmc", "gpbo"):
            add(
                st,
                f"aso vs {m} (>= 5x lower)",
                aso,
                _rel(views, m, budget, st, strata),
                ">= 5",
                lambda a, b: b >= 5 * a,
            )
    far = "far"
    # (accounting, ASO's own view, aso-refine's view, DiffPy's view); the better of ASO and aso-refine
    for what, ours, refine, diffpy in (
        ("per simulation", _rel(views, "aso", budget, far, strata), "aso-refine", "diffpy"),
        ("per PDF calculation", aso_calc(far), "aso-refine/calc", "diffpy/calc"),
        ("per finite-difference forward call", aso_calc(far), "aso-refine/fd", "diffpy/fd"),
    ):
        best = min((ours, _rel(views, refine, budget, far, strata)), key=lambda t: t[0] if t[1] else np.inf)
        add(
            far,
            f"aso|aso-refine vs diffpy, {what}",
            best,
            _rel(views, diffpy, budget, far, strata),
            "< 1x",
            lambda a, b: a < b,
        )
    add(
        "near",
        "aso-refine within 2x of diffpy, per PDF calculation",
        _rel(views, "aso-refine/calc", budget, "near", strata),
        _rel(views, "diffpy/calc", budget, "near", strata),
        "ours <= 2 x theirs",
        lambda a, b: a <= 2 * b,
    )
    for st in ("near", "far"):
        for m in ("lsq/calc",):
            add(
                st,
                f"aso/calc vs {m} (equal simulator runs)",
                aso_calc(st),
                _rel(views, m, budget, st, strata),
                "< 1x",
                lambda a, b: a < b,
            )
        # issue 20 (physics prior + residual): ASO at or below DiffPy per simulated structure, and within
        # 2x of it per PDF calculation (each forward + backward pass of the torch model counted as one)
        diffpy = _rel(views, "diffpy", budget, st, strata)
        add(
            st,
            "issue 20: aso <= diffpy, per simulated structure",
            _rel(views, "aso", budget, st, strata),
            diffpy,
            "<= 1x",
            lambda a, b: a <= b,
        )
        add(
            st,
            "issue 20: aso within 2x of diffpy, per PDF calculation",
            aso_calc(st),
            _rel(views, "diffpy/calc", budget, st, strata),
            "ours <= 2 x theirs",
            lambda a, b: a <= 2 * b,
        )
    _reach_check(out, views, budget)
    return out


def _reach_check(out: dict, views: list[dict], budget: int) -> None:
    """Issue 20: simulations ASO (prior + residual) needs to reach the best the GNN-alone ASO (``aso-gnn``)
    has at the budget, per (case, seed); the median of ``budget / needed`` should be ≥ 3."""
    gnn = {(v["case"], v["seed"]): v for v in views if v["method"] == "aso-gnn"}
    ratios = []
    for v in views:
        other = gnn.get((v["case"], v["seed"]))
        if v["method"] != "aso" or other is None or len(other["curve"]) < budget:
            continue
        goal = other["curve"][budget - 1]
        needed = next((i + 1 for i, x in enumerate(v["curve"][:budget]) if x <= goal), None)
        ratios.append(budget / needed if needed else 0.0)
    if ratios:
        med = float(np.median(ratios))
        out["checks"].append(
            {
                "stratum": "all",
                "check": "issue 20: simulations to reach aso-gnn's best at the budget, aso-gnn / aso",
                "ours": med,
                "theirs": 3.0,
                "ratio_theirs_over_ours": None,
                "goal": ">= 3x fewer",
                "met": bool(med >= 3.0),
                "runs": [len(ratios), len(ratios)],
                "per_run": ratios,
            }
        )
