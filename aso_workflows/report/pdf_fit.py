"""What a PDF user looks at after a fit: the fit plot, the refined parameters with uncertainties, Rw and
the bonds of the structure beside the start's.

* :func:`pdf_fit_view`: one candidate's fit as plain numbers (data, model, difference, the fit range,
  Rw, every refined parameter with its uncertainty, bounds and whether it ended on one, and the bond
  table of :func:`~aso_workflows.restraints.bond_table` with flags);
* :func:`plot_pdf_fit`: PDFgui's standard plot — data (circles), model (line), the difference offset
  below the curves with its zero line, the fit range marked;
* :func:`parameter_rows`, :func:`bond_rows`: the same as table rows; ``aso results fit`` prints them,
  :func:`pdf_fit_html` makes them the HTML section of the report and of the web
  GUI's campaign page.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pymatgen.core import Structure

if TYPE_CHECKING:
    from aso_workflows.campaign.state import CampaignState
    from aso_workflows.schemas import EvaluationDoc

__all__ = ["pdf_fit_view", "plot_pdf_fit", "parameter_rows", "bond_rows"]


def pdf_fit_view(state: CampaignState, e: EvaluationDoc) -> dict[str, Any] | None:
    """One evaluated candidate's PDF fit (``None`` when the campaign has no PDF target or the candidate
    no fitted spectrum). The evaluation must have been read with its structure."""
    from aso_workflows.restraints import bond_table

    if "pdf" not in state.targets or "pdf" not in e.spectra:
        return None
    target = state.targets["pdf"]
    model = state.spectrum(e.spectra["pdf"])  # the fitted spectrum (on the target's grid)
    y = np.asarray(model.values, dtype=float)
    if len(y) != len(target.values):
        y = np.interp(target.x, model.x, y)
    fit = e.fit.get("pdf")
    if fit is not None and fit.structure is not None:  # the refined cell / ADPs
        structure = fit.structure.to_pymatgen()
    else:
        structure = e.pmg_structure()
    restraints = getattr(state.config, "restraints", None)
    windows = dict(restraints.bonds) if restraints is not None else {}
    goodness = e.goodness.get("pdf")
    return {
        "candidate": f"{e.iteration}:{e.candidate}",
        "kind": e.kind,
        "r": target.x.tolist(),
        "data": target.y.tolist(),
        "model": y.tolist(),
        "difference": (target.y - y).tolist(),
        "fit_range": [float(target.x[0]), float(target.x[-1])],
        "rw": None if goodness is None else float(goodness.value),
        "parameters": dict(fit.parameters) if fit is not None else {},
        "uncertainties": dict(fit.uncertainties) if fit is not None else {},
        "bounds": dict(fit.bounds) if fit is not None else {},
        "at_bound": list(fit.at_bound) if fit is not None else [],
        "lattice": {
            "abc": [float(v) for v in structure.lattice.abc],
            "angles": [float(v) for v in structure.lattice.angles],
        },
        "bonds": bond_table(structure, state.start, windows),
        "coordinates": _free_coordinates(state, structure),
    }


def _free_coordinates(state: CampaignState, structure: Structure) -> dict[str, float]:
    """The free coordinates of the campaign's ``symmetry`` in ``structure`` (``{"z(Se1)": 0.3769}``:
    fractional, of the site's first atom); empty without a symmetry."""
    from aso_workflows.optimizers.constraint import campaign_symmetry

    sym = campaign_symmetry(state)
    if sym is None:
        return {}
    frac = sym.symmetrised(structure).frac_coords
    label_atom = {label: i for i, label in reversed(list(enumerate(sym.labels)))}
    out = {}
    for name in sym.names:
        axis, label = name[0], name[2:-1]
        out[name] = float(frac[label_atom[label], "xyz".index(axis)] % 1.0)
    return out


def plot_pdf_fit(view: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """PDFgui's fit plot of :func:`pdf_fit_view` ``view`` into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.asarray(view["r"])
    data, model, diff = (np.asarray(view[k]) for k in ("data", "model", "difference"))
    offset = float(min(data.min(), model.min())) - 1.2 * float(np.ptp(diff)) / 2 - 0.05 * float(np.ptp(data))
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.plot(r, data, "o", ms=2.5, mfc="none", color="#1f77b4", label="data")
    ax.plot(r, model, "-", lw=1.2, color="#d62728", label="model")
    ax.plot(r, diff + offset, "-", lw=1.0, color="#2ca02c", label="difference (offset)")
    ax.axhline(offset, color="0.5", lw=0.8, ls="--")
    lo, hi = view["fit_range"]
    ax.axvspan(lo, hi, color="0.93", zorder=-1, label=f"fit range {lo:g}–{hi:g} Å")
    for x in (lo, hi):
        ax.axvline(x, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("G(r) (Å⁻²)")
    rw = view.get("rw")
    head = title or f"candidate {view['candidate']} ({view['kind']})"
    ax.set_title(head + (f": Rw = {rw:.4f}" if rw is not None else ""))
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _value_sigma(value: float, sigma: float | None) -> str:
    """``value ± sigma`` with the value to the sigma's precision (two significant digits of sigma)."""
    if sigma is None or not np.isfinite(sigma) or sigma <= 0:
        return f"{value:.6g}"
    digits = max(0, 1 - int(np.floor(np.log10(sigma))))
    return f"{value:.{digits}f} ± {sigma:.2g}"


def parameter_rows(view: dict[str, Any]) -> list[list[str]]:
    """``[name, value ± σ, bounds, note]`` per refined parameter (``at bound`` when it ended on one)."""
    rows = []
    for name, value in view["parameters"].items():
        bounds = view["bounds"].get(name)
        b = f"[{bounds[0]:.4g}, {bounds[1]:.4g}]" if bounds else "–"
        note = "at bound" if name in view["at_bound"] else ""
        rows.append([name, _value_sigma(float(value), view["uncertainties"].get(name)), b, note])
    for name, value in view.get("coordinates", {}).items():
        rows.append([name, f"{value:.5f}", "–", "the structure's (searched)"])
    return rows


def bond_rows(view: dict[str, Any]) -> list[list[str]]:
    """``[pair, n, start min–max (mean), best min–max (mean), angles start, angles best, flag]`` rows."""

    def span(v: list[float]) -> str:
        return f"{v[0]:.3f}–{v[2]:.3f} ({v[1]:.3f})" if v else "–"

    def angles(v: list[float]) -> str:
        return f"{v[0]:.1f}–{v[2]:.1f}°" if v else "–"

    return [
        [
            b["pair"],
            str(b["n"]),
            span(b["start"]),
            span(b["best"]),
            angles(b["angles_start"]),
            angles(b["angles_best"]),
            b["flag"] or "ok",
        ]
        for b in view["bonds"]
    ]


def pdf_fit_html(view: dict[str, Any], img_tag: str) -> str:
    """The report's / campaign page's PDF section: the plot (``img_tag``), Rw, parameters, bonds."""
    from aso_workflows.report.markup import table

    rw = view.get("rw")
    lat = view["lattice"]
    escaped = [[html.escape(str(c)) for c in row] for row in bond_rows(view)]
    parts = [
        "<h2 id='pdf-fit'>PDF fit of the best structure</h2>",
        img_tag,
        f"<p id='pdf-rw'>Rw = {rw:.5f} over {view['fit_range'][0]:g}–{view['fit_range'][1]:g} Å "
        f"(candidate {html.escape(view['candidate'])}, {html.escape(view['kind'])}); cell "
        f"a, b, c = {', '.join(f'{v:.4f}' for v in lat['abc'])} Å, angles "
        f"{', '.join(f'{v:.2f}' for v in lat['angles'])}°.</p>"
        if rw is not None
        else "",
        "<h3>Refined parameters (uncertainties from the fit's covariance)</h3>",
        table(
            ["parameter", "value", "bounds", ""], parameter_rows(view), left={0, 3}, css_id="pdf-parameters"
        ),
        "<h3>Bonds of the best structure beside the start's</h3>",
        table(
            ["pair", "bonds", "start (Å)", "best (Å)", "angles start", "angles best", "check"],
            escaped,
            left={0, 6},
            css_id="pdf-bonds",
        ),
    ]
    return "\n".join(p for p in parts if p)
