"""Campaign outputs people look at: best structures (CIF), history (CSV) and a report (PNG + HTML)."""

from __future__ import annotations

import base64
import csv
import html
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from aso_workflows.campaign.evaluate import load_spectrum

__all__ = ["history_rows", "write_outputs", "neighbour_distances"]


def history_rows(state) -> list[dict]:
    """One row per evaluation in order: iteration, candidate, kind, status, objective, best so far, MSEs."""
    rows = []
    best = np.inf
    n = 0
    for e in state.evaluations(status=None):
        if e["status"] == "completed":
            n += 1
            best = min(best, e["objective"])
        prop = state.db.proposals.find_one({"_id": e["proposal_id"]}) or {}
        predicted = (prop.get("predicted") or {}).get("objective")
        row = {
            "n_simulations": n,
            "iteration": e["iteration"],
            "candidate": e["candidate"],
            "kind": e.get("kind"),
            "status": e["status"],
            "objective": e.get("objective"),
            "best_objective": best if np.isfinite(best) else None,
            "predicted_objective": predicted,
            "acquisition": prop.get("acquisition"),
            "fingerprint": e["fingerprint"],
            "error": e.get("error", ""),
        }
        for t, v in (e.get("mse") or {}).items():
            row[f"mse_{t}"] = v
        rows.append(row)
    return rows


def neighbour_distances(structure: Structure, rmax: float = 4.0) -> np.ndarray:
    """All interatomic distances up to ``rmax`` (periodic images included), each pair once per direction."""
    _, _, _, d = structure.get_neighbor_list(rmax)
    return np.asarray(d)


def write_outputs(state, out: str | Path, n_best: int = 3) -> dict[str, Path]:
    """Write ``best_XX.cif``, ``history.csv``, ``report.png`` and ``report.html`` into ``out``."""
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
    best = state.best(n_best)
    for i, e in enumerate(best):
        p = out / f"best_{i + 1:02d}.cif"
        Structure.from_dict(e["structure"]).to(filename=str(p))
        paths[f"best_{i + 1}"] = p
    if best:
        paths["report_png"] = _plot(state, rows, best[0], out / "report.png")
        paths["report_html"] = _html(state, rows, best, paths["report_png"], out / "report.html")
    return paths


def _plot(state, rows, best, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    techniques = list(state.targets)
    ncols = 2 + len(techniques)
    fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 4.0))
    # 1. best mismatch vs simulations
    ax = axes[0]
    done = [r for r in rows if r["status"] == "completed"]
    ax.semilogy(
        [r["n_simulations"] for r in done], [r["objective"] for r in done], ".", color="0.6", label="each"
    )
    ax.semilogy(
        [r["n_simulations"] for r in done],
        [r["best_objective"] for r in done],
        "-",
        color="C0",
        label="best so far",
    )
    start = next((r for r in done if r["kind"] == "start"), None)
    if start is not None:
        ax.axhline(start["objective"], color="C3", ls="--", lw=1, label="start")
    ax.set_xlabel("simulations")
    ax.set_ylabel("mismatch (objective)")
    ax.set_title(f"{state.name}")
    ax.legend(fontsize=8)
    # 2. spectra: target vs start vs best
    start_eval = next((e for e in state.evaluations() if e.get("kind") == "start"), None)
    for k, t in enumerate(techniques):
        ax = axes[1 + k]
        tgt = state.targets[t]
        ax.plot(tgt.x, tgt.y, "k-", lw=1.5, label="target")
        if start_eval is not None:
            s = load_spectrum(state, start_eval["spectra"][t])
            ax.plot(s.x, s.y, "C3--", lw=1, label="start")
        b = load_spectrum(state, best["spectra"][t])
        ax.plot(b.x, b.y, "C0-", lw=1, label="best")
        ax.set_xlabel(f"{tgt.grid.name} ({tgt.grid.unit})")
        ax.set_title(t.upper())
        ax.legend(fontsize=8)
    # 3. neighbour-distance histograms
    ax = axes[-1]
    bins = np.linspace(0.5, 4.0, 71)
    ax.hist(neighbour_distances(state.start), bins=bins, histtype="step", color="C3", label="start")
    ax.hist(
        neighbour_distances(Structure.from_dict(best["structure"])),
        bins=bins,
        histtype="step",
        color="C0",
        label="best",
    )
    if state.doc.get("target_structure"):
        ts = Structure.from_dict(state.doc["target_structure"])
        ax.hist(neighbour_distances(ts), bins=bins, histtype="step", color="k", label="target")
    ax.set_xlabel("neighbour distance (Å)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _html(state, rows, best, png: Path, path: Path) -> Path:
    img = base64.b64encode(Path(png).read_bytes()).decode()
    done = [r for r in rows if r["status"] == "completed"]
    start = next((r for r in done if r["kind"] == "start"), None)
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>aso-workflows report: {html.escape(state.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}"
        " td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>",
        f"<h1>Campaign {html.escape(state.name)}</h1>",
        f"<p>Status: {html.escape(str(state.doc.get('status')))}; simulations used {len(done)} / "
        f"{state.config.budget}; failed {sum(r['status'] == 'failed' for r in rows)}.</p>",
    ]
    if start is not None:
        ratio = start["objective"] / best[0]["objective"] if best[0]["objective"] > 0 else float("inf")
        lines.append(
            f"<p>Start mismatch {start['objective']:.4g}; best {best[0]['objective']:.4g} "
            f"({ratio:.1f}× lower).</p>"
        )
    lines.append(f"<img alt='campaign report' src='data:image/png;base64,{img}' style='max-width:100%'>")
    lines.append(
        "<h2>Best structures</h2><table><tr><th>rank</th><th>iteration</th><th>candidate</th>"
        "<th>objective</th><th>fingerprint</th></tr>"
    )
    for i, e in enumerate(best):
        lines.append(
            f"<tr><td>{i + 1}</td><td>{e['iteration']}</td><td>{e['candidate']}</td>"
            f"<td>{e['objective']:.4g}</td><td>{e['fingerprint']}</td></tr>"
        )
    lines.append("</table></body></html>")
    path.write_text("\n".join(lines))
    return path
