"""The self-contained ``report.html``: every figure embedded, no scripts, no external files."""

from __future__ import annotations

import datetime as _dt
import html
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from aso_workflows.report.descriptors import min_distance
from aso_workflows.report.markup import CSS, fmt, img, table
from aso_workflows.report.pdf_fit import pdf_fit_html

if TYPE_CHECKING:
    from aso_workflows.campaign.state import CampaignState
    from aso_workflows.schemas import EvaluationDoc

__all__ = ["write_html"]


def write_html(
    state: CampaignState,
    rows: list[dict],
    best: list[EvaluationDoc],
    accuracy: list[dict],
    paths: dict[str, Path],
    path: Path,
    pdf_view: dict | None = None,
) -> Path:
    """Write ``report.html`` at ``path``: the summary, the figures in ``paths`` (embedded), the surrogate's
    accuracy, the best structures and the failed evaluations."""
    from aso_workflows import __version__

    failed = [r for r in rows if r["status"] != "completed"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>aso-workflows report: {html.escape(state.name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Campaign {html.escape(state.name)}</h1>",
        "<dl id='summary'>"
        + "".join(
            f"<dt>{k}</dt><dd>{html.escape(str(v)) if k != 'store' else v}</dd>"
            for k, v in _facts(state, rows, best)
        )
        + "</dl>",
        "<h2 id='convergence'>Best mismatch vs simulations</h2>",
        img(paths["convergence_png"], "best mismatch vs simulations"),
        "<h2 id='spectra'>Spectra: target, start and best</h2>",
        img(paths["spectra_png"], "target, start and best spectra"),
        *(
            [pdf_fit_html(pdf_view, img(paths["pdf_fit_png"], "PDF fit: data, model and difference"))]
            if pdf_view is not None and "pdf_fit_png" in paths
            else []
        ),
        "<h2 id='structure'>Neighbour distances and bond angles</h2>",
        img(paths["structure_png"], "neighbour-distance and bond-angle histograms"),
        *(
            [
                "<h2 id='xas'>Measured μ(E): background and what the campaign fits</h2>",
                img(
                    paths["xas_png"],
                    "μ(E) with pre-edge, post-edge and AUTOBK background; the fitted χ(k) or μ(E)",
                ),
            ]
            if "xas_png" in paths
            else []
        ),
        "<h2 id='surrogate'>Surrogate accuracy per iteration</h2>",
        *_surrogate_section(state, accuracy, paths),
        "<h2 id='best'>Best structures</h2>",
        _best_table(state, rows, best, paths),
        *_failed_section(failed),
    ]
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    parts.append(
        f"<p class='muted'>Written by aso-workflows {html.escape(__version__)} at {stamp}. "
        "Figures are also beside this file as report_*.png; the full history is history.csv.</p></body></html>"
    )
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _facts(state: CampaignState, rows: list[dict], best: list[EvaluationDoc]) -> list[tuple[str, str]]:
    """The summary's (name, value) pairs: status, optimiser, simulations, mismatches, Rw/R, fitted values."""
    done = [r for r in rows if r["status"] == "completed"]
    start = next((r for r in done if r["kind"] == "start"), None)
    doc = state.doc
    b0 = best[0].objective
    assert b0 is not None  # the best evaluations are completed ones, which have an objective
    facts = [
        ("status", f"{doc.get('status')}" + (f" ({doc['stop_reason']})" if doc.get("stop_reason") else "")),
        ("optimizer", state.config.optimizer),
        ("techniques", ", ".join(t.upper() for t in state.targets)),
        ("simulations", f"{len(done)} / {state.config.budget} used, {len(rows) - len(done)} failed"),
        ("by kind", ", ".join(f"{k} {n}" for k, n in Counter(r["kind"] for r in done).items())),
        ("iterations", str(max((r["iteration"] for r in rows), default=0))),
        ("start mismatch", fmt(start["objective"]) if start else "–"),
        ("best mismatch", f"{fmt(b0)} (candidate {best[0].iteration}:{best[0].candidate})"),
    ]
    if start is not None and b0 > 0:
        facts.append(("improvement", f"{start['objective'] / b0:.1f}× lower than the start"))
    for t, g in best[0].goodness.items():  # Rw / R as the field quotes it, next to the objective
        at_start = start.get(f"{g.name}_{t}") if start is not None else None
        facts.append(
            (
                f"best {g.name} ({t})",
                fmt(g.value) + (f" (start {fmt(at_start)})" if at_start is not None else ""),
            )
        )
    for t, f in best[0].fit.items():
        errors = f.uncertainties  # where the fit gives them (FEFFIT-grade EXAFS: Larch's covariance)
        facts.append(
            (
                f"fitted ({t})",
                ", ".join(
                    f"{k} {fmt(v)}" + (f" ± {fmt(errors[k])}" if k in errors else "")
                    for k, v in f.parameters.items()
                ),
            )
        )
        if "first_shell_r" in f.statistics:
            facts.append(
                (f"first shell ({t})", f"{f.statistics['first_shell_r']:.4f} Å (with the fitted expansion)")
            )
    facts.append(("store", html.escape(state.db.spec.redacted())))
    return facts


def _surrogate_section(state: CampaignState, accuracy: list[dict], paths: dict[str, Path]) -> list[str]:
    """The surrogate's accuracy per iteration (figure and table), or why there is none."""
    if not accuracy:
        return [
            f"<p class='muted'>No surrogate predictions: the {html.escape(state.config.optimizer)} optimizer proposes without one.</p>"
        ]
    techs = list(state.targets)
    headers = [
        "iteration",
        "candidates",
        "predicted (mean)",
        "simulated (mean)",
        "|pred − sim|",
        "relative error",
        "rank corr.",
    ]
    headers += [f"held-out MAE {t}" for t in techs] + [f"1σ coverage {t}" for t in techs] + ["trained on"]
    table_rows = [
        [
            r["iteration"],
            r["n_candidates"],
            fmt(r["predicted_mean"]),
            fmt(r["simulated_mean"]),
            fmt(r["mae"]),
            fmt(r["relative_error"], ".2f"),
            fmt(r["rank_correlation"], ".2f"),
        ]
        + [fmt(r.get(f"heldout_mae_{t}")) for t in techs]
        + [fmt(r.get(f"coverage_{t}"), ".2f") for t in techs]
        + [fmt(r.get("n_train"))]
        for r in accuracy
    ]
    return [
        img(paths["surrogate_png"], "surrogate accuracy: predicted vs simulated mismatch"),
        table(headers, table_rows, css_id="surrogate-table"),
    ]


def _best_table(
    state: CampaignState, rows: list[dict], best: list[EvaluationDoc], paths: dict[str, Path]
) -> str:
    """The best structures: objective, MSE and Rw/R per technique, prediction, shortest distance, CIF."""
    techs = list(state.targets)
    headers = ["rank", "candidate", "kind", "objective"] + [f"MSE {t}" for t in techs]
    headers += [f"Rw/R {t}" for t in techs]
    headers += ["predicted", "shortest distance (Å)", "CIF", "fingerprint"]
    predicted = {r["fingerprint"]: r.get("predicted_objective") for r in rows}
    best_rows = []
    for i, e in enumerate(best):
        s = e.pmg_structure()
        cif = paths.get(f"best_{i + 1}")
        link = f"<a href='{cif.name}'>{cif.name}</a>" if cif is not None else "–"
        best_rows.append(
            [i + 1, f"{e.iteration}:{e.candidate}", fmt(e.kind), fmt(e.objective)]
            + [fmt(e.mse.get(t)) for t in techs]
            + [fmt(e.goodness[t].value) if t in e.goodness else "–" for t in techs]
            + [
                fmt(predicted.get(e.fingerprint)),
                fmt(min_distance(s), ".3f"),
                link,
                fmt(e.fingerprint),
            ]
        )
    return table(headers, best_rows, left={2, 6 + len(techs), 7 + len(techs)}, css_id="best-table")


def _failed_section(failed: list[dict]) -> list[str]:
    """The failed evaluations and their reasons (nothing when none failed)."""
    if not failed:
        return []
    return [
        "<h2 id='failed'>Failed evaluations</h2>",
        table(
            ["candidate", "status", "kind", "reason"],
            [
                [
                    f"{r['iteration']}:{r['candidate']}",
                    fmt(r["status"]),
                    fmt(r["failure_kind"]),
                    fmt(r["error"]),
                ]
                for r in failed
            ],
            left={1, 2, 3},
            css_id="failed-table",
        ),
    ]
