"""Campaign outputs people look at: best structures (CIF), history (CSV) and the campaign report.

The report is one self-contained ``report.html`` (every figure embedded as a PNG data URI, no scripts, no
external files, so it can be mailed or opened from a cluster's scratch disk) plus the same figures as PNG
files beside it:

``report.png``
    Overview: best mismatch vs simulations, target / start / best spectra, neighbour distances.
``report_convergence.png``
    Mismatch of every simulation and the best so far, with the start's mismatch.
``report_spectra.png``
    Target vs start vs best spectrum, one panel per technique, with the best's residual.
``report_structure.png``
    Neighbour-distance and bond-angle histograms of start, best (and target structure when known).
``report_surrogate.png``
    Surrogate accuracy per iteration: predicted vs simulated mismatch of the proposed candidates and the
    ensembles' held-out error (``aso`` optimizer only).
``report_pdf_fit.png``
    PDF targets: PDFgui's fit plot of the best structure (data, model, difference offset below, the fit
    range marked); the HTML adds its refined parameters with uncertainties, Rw and its bonds beside
    the start's (:mod:`aso_workflows.report.pdf_fit`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from aso_workflows.report.descriptors import bond_angles, first_shell_cutoffs, neighbour_distances
from aso_workflows.report.history import HISTORY_COLUMNS, history_rows, surrogate_accuracy_rows
from aso_workflows.schemas import EvaluationDoc

if TYPE_CHECKING:
    from aso_workflows.campaign.state import CampaignState

__all__ = [
    "HISTORY_COLUMNS",
    "history_rows",
    "surrogate_accuracy_rows",
    "write_outputs",
    "neighbour_distances",
    "first_shell_cutoffs",
    "bond_angles",
]


def write_outputs(state: CampaignState, out: str | Path, n_best: int = 3) -> dict[str, Path]:
    """Write ``best_XX.cif``, ``history.csv``, the report figures (PNG) and ``report.html`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    rows = history_rows(state)
    if rows:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        with open(out / "history.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        paths["history"] = out / "history.csv"
    best = [EvaluationDoc.from_mongo(d) for d in state.best(n_best)]
    for i, e in enumerate(best):
        p = out / f"best_{i + 1:02d}.cif"
        e.pmg_structure().to(filename=str(p))
        paths[f"best_{i + 1}"] = p
    if best:
        import matplotlib

        matplotlib.use("Agg")
        from aso_workflows.report.figures import ReportFigures
        from aso_workflows.report.html import write_html

        figures = ReportFigures(state, rows, best)
        paths["report_png"] = figures.overview(out / "report.png")
        paths["convergence_png"] = figures.convergence(out / "report_convergence.png")
        paths["spectra_png"] = figures.spectra(out / "report_spectra.png")
        paths["structure_png"] = figures.structure(out / "report_structure.png")
        if figures.xas_targets():
            paths["xas_png"] = figures.xas_processing(out / "report_xas.png")
        accuracy = surrogate_accuracy_rows(state)
        if accuracy:
            paths["surrogate_png"] = figures.surrogate(out / "report_surrogate.png", accuracy)
        from aso_workflows.report.pdf_fit import pdf_fit_view, plot_pdf_fit

        view = pdf_fit_view(state, best[0])
        if view is not None:
            paths["pdf_fit_png"] = plot_pdf_fit(view, out / "report_pdf_fit.png")
        paths["report_html"] = write_html(state, rows, best, accuracy, paths, out / "report.html", view)
    return paths
