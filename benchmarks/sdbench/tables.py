"""The structure-determination benchmark's outputs: ``results.json``, ``curves.csv``, ``table.md``/``.csv``,
the equal-cost table, the plots (:mod:`sdbench.plots`) and the ``--paper`` summary over q."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from sdbench.accounting import accounting_views, accuracy_table, check_targets, equal_cost_rows, summarise
from sdbench.plots import plot_accuracy, plot_cases, plot_median
from sdbench.suites import SuiteSettings

__all__ = ["write_outputs", "append_equal_cost_table", "write_paper_summary", "EQUAL_COST_HEADER"]


def write_outputs(
    cases, methods, skipped, results, s: SuiteSettings, out: Path, wall: float, strata: dict | None = None
) -> dict:
    ok = [r for r in results if "error" not in r and r.get("curve")]
    failed = [r for r in results if "error" in r]
    same_initial = {}
    for case in cases:
        for seed in s.seeds:
            fps = {
                json.dumps(r["initial_fingerprints"])
                for r in ok
                if r["case"] == case.name and r["seed"] == seed
            }
            if fps:
                same_initial[f"{case.name}/s{seed}"] = len(fps) == 1
    views, shown = accounting_views(ok, methods, s.budget)
    groups = {"all": views}
    if strata:
        for name in ("near", "far"):
            groups[name] = [v for v in views if strata.get(v["case"]) == name]
    tables = {g: summarise(v, shown, s) for g, v in groups.items() if v}
    accuracy = accuracy_table(ok, strata)
    targets = check_targets(views, s.budget, strata, s.technique) if strata or s.technique != "pdf" else None
    doc = {
        "suite": dataclasses.asdict(s),
        "cases": [
            {
                "name": c.name,
                "source": c.source,
                **c.info,
                "sampler": c.sampler,
                "stratum": (strata or {}).get(c.name),
            }
            for c in cases
        ],
        "methods": methods,
        "skipped": skipped,
        "failed_runs": failed,
        "same_initial_data": same_initial,
        "wall_s_this_invocation": round(wall, 1),
        "load_average": os.getloadavg(),
        "table": tables.get("all", []),
        "tables": tables,
        "surrogate_accuracy": accuracy,
        "targets": targets,
        "runs": sorted(ok, key=lambda r: (r["case"], r["method"], r["seed"])),
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    if targets is not None:
        (out / "targets.json").write_text(json.dumps(targets, indent=1))
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "stratum", "method", "seed", "n", "best_objective", "best_over_start"])
        for r in sorted(views, key=lambda r: (r["case"], r["method"], r["seed"])):
            for n, b in enumerate(r["curve"], 1):
                w.writerow(
                    [
                        r["case"],
                        (strata or {}).get(r["case"], ""),
                        r["method"],
                        r["seed"],
                        n,
                        f"{b:.6g}",
                        f"{b / r['start_objective']:.6g}",
                    ]
                )
    _write_table(tables, skipped, s, out, failed, accuracy, targets, strata)
    append_equal_cost_table(out)
    if ok:
        plot_median(views, shown, s, out / "median_curves.png")
        for g in ("near", "far"):
            if groups.get(g):
                plot_median(groups[g], shown, s, out / f"median_curves_{g}.png", title=g)
        plot_cases(views, shown, s, out / "per_case.png")
        if any(r.get("surrogate_accuracy") for r in ok):
            plot_accuracy(ok, strata, out / "surrogate_accuracy.png")
    return doc


EQUAL_COST_HEADER = "### At equal cost beyond the budget"


def append_equal_cost_table(out: Path) -> None:
    """Add (or replace) the equal-cost section of ``<out>/table.md`` from ``<out>/results.json``: the
    median best/start of every accounting at 1, 2, 4 and 8 × the budget in calculations."""
    out = Path(out)
    doc = json.loads((out / "results.json").read_text())
    budget = int(doc["suite"]["budget"])
    xs = [budget * k for k in (1, 2, 4, 8)]
    strata = {c["name"]: c["stratum"] for c in doc["cases"] if c.get("stratum")} or None
    rows = equal_cost_rows(doc["runs"], doc["methods"], xs, strata)
    (out / "equal_cost.json").write_text(json.dumps({"calculations": xs, "rows": rows}, indent=1))
    lines = [
        EQUAL_COST_HEADER,
        "",
        "Median best/start after n simulator calculations (per simulation for random/RMC/GP-BO; `/calc`: "
        "PDF or FEFF calculations incl. Jacobians, refinement steps and per-atom rows; `/fd`: finite-"
        "difference forward calls). `≤`: some runs had stopped before n (their last value, an upper bound); "
        "`—`: not known there.",
        "",
        "| accounting | cases | runs | " + " | ".join(f"n = {n}" for n in xs) + " |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in xs) + " |",
    ]
    for row in rows:
        cells = []
        for n in xs:
            v = row[f"rel@{n}"]
            done, total = row[f"reached@{n}"].split("/")
            if v is None or (row["accounting"] == "sim" and done != total):
                cells.append("—")  # per simulation: not known past the budget
            else:
                cells.append(("" if done == total else "≤") + f"{v:.3g}")
        lines.append(f"| {row['label']} | {row['stratum']} | {row['runs']} | " + " | ".join(cells) + " |")
    text = (out / "table.md").read_text()
    text = text.split("\n" + EQUAL_COST_HEADER)[0].rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if v is None:
        return "—"
    return str(v)


def _table_lines(table: list[dict], s: SuiteSettings) -> list[str]:
    lines = [
        "| method | runs | "
        + " | ".join(f"best @{n}" for n in s.checkpoints())
        + " | "
        + " | ".join(f"ASO/method @{n}" for n in s.checkpoints())
        + " | ASO wins @"
        + str(s.budget)
        + " | fallbacks | median wall (s) |",
        "| --- | ---: | " + " | ".join("---:" for _ in s.checkpoints() * 2) + " | ---: | ---: | ---: |",
    ]
    for row in table:
        best = " | ".join(
            f"{row[f'median_best@{n}']:.3g} ({row[f'median_rel@{n}']:.3g})" for n in s.checkpoints()
        )
        ratio = " | ".join(_fmt(row.get(f"aso/{row['method']}@{n}", "—")) for n in s.checkpoints())
        wins = row.get(f"aso_wins@{s.budget}", "—")
        lines.append(
            f"| {row['method']} | {row['runs']} | {best} | {ratio} | {wins} | {row.get('fallbacks', '—')} "
            f"| {row['median_wall_s']:.0f} |"
        )
    return lines


def _write_table(
    tables: dict[str, list[dict]],
    skipped: dict,
    s: SuiteSettings,
    out: Path,
    failed: Sequence[dict] = (),
    accuracy: Sequence[dict] = (),
    targets: dict | None = None,
    strata: dict | None = None,
) -> None:
    keys: list[str] = ["group"]
    for table in tables.values():
        for row in table:
            keys += [k for k in row if k not in keys]
    with open(out / "table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for g, table in tables.items():
            w.writerows({"group": g, **row} for row in table)
    lines = [
        f"Suite `{s.name}`: {s.technique.upper()}, budget {s.budget} (initial {s.initial_size} + start), "
        f"q = {s.batch_size}, seeds {s.seeds}. Median over cases × seeds of the best mismatch after n "
        "simulations (best/start in brackets); ASO/method = ratio of the medians of best/start (< 1: ASO "
        "lower); wins = (case, seed) pairs where ASO is lower.",
    ]
    titles = {"all": "All cases", "near": "Near cases", "far": "Far cases"}
    from cases import NEAR_FAR_THRESHOLD_A

    for g, table in tables.items():
        if len(tables) > 1:
            names = sorted({r for r, st in (strata or {}).items() if g == "all" or st == g})
            what = {
                "near": f"target < {NEAR_FAR_THRESHOLD_A} Å RMS from the start",
                "far": f"target ≥ {NEAR_FAR_THRESHOLD_A} Å RMS",
            }.get(g, "")
            lines += ["", f"### {titles[g]}" + (f" ({what})" if what else "") + f": {', '.join(names)}", ""]
        else:
            lines.append("")
        lines += _table_lines(table, s)
    for m, why in skipped.items():
        lines.append(f"| {m} | skipped: {why} |")
    for m in sorted({r["method"] for r in failed}):
        bad = [r for r in failed if r["method"] == m]
        what = "; ".join(sorted({r["error"].splitlines()[0][:80] for r in bad}))
        names = ", ".join(f"{r['case']}/s{r['seed']}" for r in bad)
        lines.append(f"| {m} | {len(bad)} run(s) not finished ({what}): {names} |")
    labels = {row["method"] for t in tables.values() for row in t}
    notes = {
        "diffpy/calc": "`diffpy/calc`: DiffPy counted in PDF calculations (pdffit2 refine steps, each a PDF with "
        "analytic derivatives) instead of simulated structures.",
        "diffpy/fd": "`diffpy/fd`: DiffPy counted in forward calls of a finite-difference Jacobian: each "
        "pdffit2 calculation with derivatives = P + 1 PDF calculations (P refined parameters; what the "
        "refinement costs when the simulator has no derivatives).",
        "aso/calc": "`aso/calc`: ASO's simulations plus the node-level surrogate's per-atom PDF rows, in "
        "G(r)-equivalents of pdffit2 time.",
        "aso-refine/calc": "`aso-refine/calc`: each simulation plus the pdffit2 refine steps that polished its "
        "proposal (and the per-atom rows).",
        "aso-refine/fd": "`aso-refine/fd`: as `/calc`, each pdffit2 calculation with derivatives counted as P + 1 "
        "forward calls.",
        "lsq/calc": "`lsq/calc`: least-squares refinement with finite-difference Jacobians, counted in simulator "
        "runs (each trial step simulated, plus every forward run of the Jacobians).",
        "lsq-block4/calc": "`lsq-block4/calc`: lsq refining 4 atoms per Jacobian (block coordinate descent).",
    }
    extra = [notes[k] for k in notes if k in labels]
    if extra:
        lines += [""] + [f"{n}" for n in extra]
    lines += [
        "",
        "fallbacks: proposals stored as kind `fallback` (the proposer found no valid, distinct candidate "
        "and a random perturbation of a best structure was simulated instead) / all proposals.",
    ]
    if accuracy:
        lines += [
            "",
            "### Surrogate accuracy per iteration",
            "",
            "Held-out MAE/MAD of the ensemble's fit (structures held out by members, 1 = no better than the "
            "mean spectrum) and the share of held-out errors within ±1 calibrated σ (0.68 when calibrated): "
            "median over runs at the first, middle and last training (n = training structures).",
            "",
            "| method | cases | runs | n first | MAE/MAD first | cov. first | n middle | MAE/MAD middle | "
            "cov. middle | n last | MAE/MAD last | cov. last |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in accuracy:
            cells = []
            for where in ("first", "middle", "last"):
                cells += [
                    _fmt(row[f"n_train_{where}"]),
                    _fmt(row[f"mae_over_mad_{where}"]),
                    _fmt(row[f"coverage_{where}"]),
                ]
            lines.append(
                f"| {row['method']} | {row['stratum']} | {row['runs']} | " + " | ".join(cells) + " |"
            )
    if targets and targets["checks"]:
        lines += [
            "",
            f"### Targets of issue 12 at {targets['budget']} (median of best/start over cases × seeds)",
            "",
            "| cases | check | ours | theirs | theirs / ours | goal | met | runs |",
            "| --- | --- | ---: | ---: | ---: | --- | --- | --- |",
        ]
        for c in targets["checks"]:
            lines.append(
                f"| {c['stratum']} | {c['check']} | {c['ours']:.3g} | {c['theirs']:.3g} | "
                f"{c['ratio_theirs_over_ours']:.3g} | {c['goal']} | {'yes' if c['met'] else '**no**'} | "
                f"{c['runs'][0]}/{c['runs'][1]} |"
            )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def write_paper_summary(out: Path) -> None:
    """``paper_table.md``: every q's table (those run so far, also by other invocations), one after the
    other, and ``paper_targets.json``: every q's target checks."""
    parts, targets = [], {}
    for sub in sorted(Path(out).glob("q*"), key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0):
        if (sub / "table.md").is_file():
            parts += [f"## q = {sub.name[1:]}", "", (sub / "table.md").read_text(), ""]
        if (sub / "targets.json").is_file():
            targets[sub.name] = json.loads((sub / "targets.json").read_text())
    (Path(out) / "paper_table.md").write_text("\n".join(parts))
    (Path(out) / "paper_targets.json").write_text(json.dumps(targets, indent=1))
