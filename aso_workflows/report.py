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
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
from collections import defaultdict
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

__all__ = [
    "HISTORY_COLUMNS",
    "history_rows",
    "surrogate_accuracy_rows",
    "write_outputs",
    "neighbour_distances",
    "first_shell_cutoffs",
    "bond_angles",
]

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


def _predicted_objectives(state) -> dict[str, float]:
    """The surrogate's predicted mismatch of each proposal that has one, by proposal id."""
    out = {}
    for p in state.proposal_docs():
        value = (p.predicted or {}).get("objective")
        if value is not None:
            out[p.id] = float(value)
    return out


def history_rows(state) -> list[dict]:
    """One row per evaluation in order: iteration, candidate, kind, status, objective, best so far, MSEs.

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
        rows.append(row)
    return rows


def surrogate_accuracy_rows(state) -> list[dict]:
    """Per iteration: predicted vs simulated mismatch of its candidates, and the ensembles' metrics.

    The candidates of iteration *k* were proposed with the ensembles trained at the end of iteration
    *k − 1*, so row *k* carries those models' ``heldout_mae_<technique>`` / ``coverage_<technique>``.
    """
    predicted = _predicted_objectives(state)
    if not predicted:
        return []
    pairs: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for it, p, sim in _pairs_by_iteration(state, predicted):
        pairs[it].append((p, sim))
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


def _pairs_by_iteration(state, predicted: dict[str, float] | None = None) -> list[tuple[int, float, float]]:
    """(iteration, predicted, simulated) of every evaluated candidate that has a prediction."""
    predicted = _predicted_objectives(state) if predicted is None else predicted
    out = []
    for e in state.evaluation_docs("completed"):
        p = predicted.get(e.proposal_id)
        if p is not None:
            out.append((e.iteration, p, float(e.objective)))
    return sorted(out)


# ---- structure descriptors ------------------------------------------------------------------------------
def _symbol(site) -> str:
    return getattr(site.specie, "symbol", str(site.specie))


def neighbour_distances(structure: Structure, rmax: float = 4.0) -> np.ndarray:
    """All interatomic distances up to ``rmax`` (periodic images included), each pair once per direction."""
    _, _, _, d = structure.get_neighbor_list(rmax)
    return np.asarray(d)


def first_shell_cutoffs(structure: Structure, scale: float = 1.2, rmax: float = 5.0) -> dict[str, float]:
    """Per element: ``scale`` × the shortest neighbour distance of any atom of that element.

    Computed once on a reference structure (the start) and used for every structure compared with it, so
    the histograms count the same kind of bonds.
    """
    centers, _, _, d = structure.get_neighbor_list(rmax)
    out: dict[str, float] = {}
    for i, site in enumerate(structure):
        mine = d[(centers == i) & (d > 1e-8)]
        if mine.size:
            sym = _symbol(site)
            out[sym] = min(out.get(sym, np.inf), float(mine.min()) * scale)
    return out


def bond_angles(structure: Structure, cutoffs: dict[str, float]) -> np.ndarray:
    """Angles (degrees) neighbour–atom–neighbour at every atom, neighbours within its element's cutoff.

    pymatgen's neighbour list gives the periodic images; the angles themselves are a few lines of numpy
    (no library computes plain bond-angle distributions of a periodic cell with per-element cutoffs).
    """
    if not cutoffs:
        return np.array([])
    centers, points, images, d = structure.get_neighbor_list(max(cutoffs.values()))
    frac = structure.frac_coords
    vec = structure.lattice.get_cartesian_coords(frac[points] + images - frac[centers])
    out = []
    for i, site in enumerate(structure):
        cut = cutoffs.get(_symbol(site))
        if cut is None:
            continue
        m = (centers == i) & (d <= cut) & (d > 1e-8)
        if m.sum() < 2:
            continue
        u = vec[m] / d[m][:, None]
        cos = np.clip(u @ u.T, -1.0, 1.0)
        iu = np.triu_indices(len(u), 1)
        out.append(np.degrees(np.arccos(cos[iu])))
    return np.concatenate(out) if out else np.array([])


def _min_distance(structure: Structure) -> float | None:
    _, _, _, d = structure.get_neighbor_list(5.0)
    d = d[d > 1e-8]
    return float(d.min()) if d.size else None


# ---- writing -----------------------------------------------------------------------------------------------
def write_outputs(state, out: str | Path, n_best: int = 3) -> dict[str, Path]:
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
    best = state.best(n_best)
    for i, e in enumerate(best):
        p = out / f"best_{i + 1:02d}.cif"
        Structure.from_dict(e["structure"]).to(filename=str(p))
        paths[f"best_{i + 1}"] = p
    if best:
        import matplotlib

        matplotlib.use("Agg")
        figures = _Figures(state, rows, best)
        paths["report_png"] = figures.overview(out / "report.png")
        paths["convergence_png"] = figures.convergence(out / "report_convergence.png")
        paths["spectra_png"] = figures.spectra(out / "report_spectra.png")
        paths["structure_png"] = figures.structure(out / "report_structure.png")
        accuracy = surrogate_accuracy_rows(state)
        if accuracy:
            paths["surrogate_png"] = figures.surrogate(out / "report_surrogate.png", accuracy)
        paths["report_html"] = _html(state, rows, best, accuracy, paths, out / "report.html")
    return paths


_YLABEL = {"pdf": "G(r) (Å⁻²)", "exafs": "k^w χ(k)", "xanes": "normalised μ(E)"}


class _Figures:
    """The report's matplotlib figures (one method per PNG), sharing the data they all use."""

    def __init__(self, state, rows: list[dict], best: list[dict]):
        self.state = state
        self.rows = rows
        self.done = [r for r in rows if r["status"] == "completed"]
        self.best = best[0]
        self.start_eval = next((e for e in state.evaluations() if e.get("kind") == "start"), None)
        self.techniques = list(state.targets)
        self.structures = {"start": state.start, "best": Structure.from_dict(self.best["structure"])}
        if state.doc.get("target_structure"):
            self.structures["target"] = Structure.from_dict(state.doc["target_structure"])
        self.cutoffs = first_shell_cutoffs(state.start)

    @staticmethod
    def _save(fig, path: Path) -> Path:
        import matplotlib.pyplot as plt

        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    _COLORS = {"start": "C3", "best": "C0", "target": "k"}

    # -- panels
    def _convergence(self, ax) -> None:
        done = self.done
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
        n_initial = sum(r["iteration"] == 0 for r in done)
        if 0 < n_initial < len(done):
            ax.axvline(n_initial + 0.5, color="0.8", lw=1)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("simulations")
        ax.set_ylabel("mismatch (objective)")
        ax.set_title(f"{self.state.name}: best mismatch")
        ax.legend(fontsize=8)

    def _spectrum(self, ax, technique: str, residual: bool = False) -> None:
        tgt = self.state.targets[technique]
        ax.plot(tgt.x, tgt.y, "k-", lw=1.5, label="target")
        if self.start_eval is not None:
            s = self.state.spectrum(self.start_eval["spectra"][technique])
            ax.plot(s.x, s.y, "C3--", lw=1, label="start")
        b = self.state.spectrum(self.best["spectra"][technique])
        ax.plot(b.x, b.y, "C0-", lw=1, label="best")
        if residual:
            y = np.asarray(tgt.y, dtype=float)
            offset = y.min() - 0.15 * float(np.ptp(y) or 1.0)
            ax.plot(b.x, np.asarray(b.y) - y + offset, color="0.45", lw=0.8, label="best − target (offset)")
        ax.set_xlabel(f"{tgt.grid.name} ({tgt.grid.unit})")
        ax.set_ylabel(_YLABEL.get(technique, technique))
        ax.set_title(technique.upper())
        ax.legend(fontsize=8)

    def _distances(self, ax) -> None:
        bins = np.linspace(0.5, 4.0, 71)
        for label, s in self.structures.items():
            ax.hist(
                neighbour_distances(s), bins=bins, histtype="step", color=self._COLORS[label], label=label
            )
        ax.set_xlabel("neighbour distance (Å)")
        ax.set_ylabel("count")
        ax.set_title("neighbour distances")
        ax.legend(fontsize=8)

    def _angles(self, ax) -> None:
        bins = np.linspace(0, 180, 91)
        for label, s in self.structures.items():
            ax.hist(
                bond_angles(s, self.cutoffs),
                bins=bins,
                histtype="step",
                color=self._COLORS[label],
                label=label,
            )
        cut = ", ".join(f"{k} {v:.2f}" for k, v in sorted(self.cutoffs.items()))
        ax.set_xlabel("bond angle (°)")
        ax.set_ylabel("count")
        ax.set_title(f"bond angles (first shell: {cut} Å)", fontsize=9)
        ax.legend(fontsize=8)

    # -- figures
    def overview(self, path: Path) -> Path:
        import matplotlib.pyplot as plt

        ncols = 2 + len(self.techniques)
        fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 4.0))
        self._convergence(axes[0])
        for k, t in enumerate(self.techniques):
            self._spectrum(axes[1 + k], t)
        self._distances(axes[-1])
        return self._save(fig, path)

    def convergence(self, path: Path) -> Path:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        self._convergence(ax)
        return self._save(fig, path)

    def spectra(self, path: Path) -> Path:
        import matplotlib.pyplot as plt

        n = len(self.techniques)
        fig, axes = plt.subplots(1, n, figsize=(6.0 * n, 4.2), squeeze=False)
        for k, t in enumerate(self.techniques):
            self._spectrum(axes[0, k], t, residual=True)
        return self._save(fig, path)

    def structure(self, path: Path) -> Path:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2))
        self._distances(axes[0])
        self._angles(axes[1])
        return self._save(fig, path)

    def surrogate(self, path: Path, accuracy: list[dict]) -> Path:
        import matplotlib.pyplot as plt

        pairs = _pairs_by_iteration(self.state)
        fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.4))
        ax = axes[0]
        its = np.array([p[0] for p in pairs])
        pred = np.array([p[1] for p in pairs])
        sim = np.array([p[2] for p in pairs])
        sc = ax.scatter(sim, pred, c=its, cmap="viridis", s=22)
        lo = float(min(pred.min(), sim.min()))
        hi = float(max(pred.max(), sim.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--", label="predicted = simulated")
        if lo > 0:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("simulated mismatch")
        ax.set_ylabel("predicted mismatch (surrogate)")
        ax.set_title("predicted vs simulated, proposed candidates")
        fig.colorbar(sc, ax=ax, label="iteration", ticks=sorted(set(its.tolist())))
        ax.legend(fontsize=8)
        ax = axes[1]
        x = [r["iteration"] for r in accuracy]
        ax.plot(x, [r["mae"] for r in accuracy], "o-", color="C1", label="|predicted − simulated| mismatch")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration")
        ax.set_ylabel("mismatch error")
        ax.set_yscale("log")
        ax2 = ax.twinx()
        for k, t in enumerate(self.techniques):
            ys = [r.get(f"heldout_mae_{t}") for r in accuracy]
            if any(y is not None for y in ys):
                ax2.plot(
                    x,
                    [np.nan if y is None else y for y in ys],
                    "s--",
                    color=f"C{2 + k}",
                    label=f"held-out MAE {t}",
                )
        ax2.set_ylabel("ensemble held-out spectrum MAE")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8)
        ax.set_title("surrogate accuracy per iteration")
        return self._save(fig, path)


# ---- HTML --------------------------------------------------------------------------------------------------
_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}th{background:#f3f3f3}"
    "td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee;margin:0.3em 0}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}"
    ".muted{color:#777;font-size:90%}"
)


def _fmt(v, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(v)
    if isinstance(v, (float, np.floating)):
        return format(float(v), spec)
    return html.escape(str(v))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _table(headers: list[str], rows: list[list], left: set[int] = frozenset(), css_id: str = "") -> str:
    ident = f" id='{css_id}'" if css_id else ""
    head = "".join(f"<th class='l'>{h}</th>" if i in left else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = []
    for r in rows:
        cells = "".join(f"<td class='l'>{c}</td>" if i in left else f"<td>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html(state, rows, best, accuracy, paths: dict[str, Path], path: Path) -> Path:
    from aso_workflows import __version__

    done = [r for r in rows if r["status"] == "completed"]
    failed = [r for r in rows if r["status"] != "completed"]
    start = next((r for r in done if r["kind"] == "start"), None)
    doc = state.doc
    b0 = best[0]["objective"]
    facts = [
        ("status", f"{doc.get('status')}" + (f" ({doc['stop_reason']})" if doc.get("stop_reason") else "")),
        ("optimizer", state.config.optimizer),
        ("techniques", ", ".join(t.upper() for t in state.targets)),
        ("simulations", f"{len(done)} / {state.config.budget} used, {len(failed)} failed"),
        ("iterations", str(max((r["iteration"] for r in rows), default=0))),
        ("start mismatch", _fmt(start["objective"]) if start else "–"),
        ("best mismatch", f"{_fmt(b0)} (candidate {best[0]['iteration']}:{best[0]['candidate']})"),
    ]
    if start is not None and b0 > 0:
        facts.append(("improvement", f"{start['objective'] / b0:.1f}× lower than the start"))
    facts.append(("store", html.escape(state.db.spec.redacted())))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>aso-workflows report: {html.escape(state.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Campaign {html.escape(state.name)}</h1>",
        "<dl id='summary'>"
        + "".join(f"<dt>{k}</dt><dd>{html.escape(str(v)) if k != 'store' else v}</dd>" for k, v in facts)
        + "</dl>",
        "<h2 id='convergence'>Best mismatch vs simulations</h2>",
        _img(paths["convergence_png"], "best mismatch vs simulations"),
        "<h2 id='spectra'>Spectra: target, start and best</h2>",
        _img(paths["spectra_png"], "target, start and best spectra"),
        "<h2 id='structure'>Neighbour distances and bond angles</h2>",
        _img(paths["structure_png"], "neighbour-distance and bond-angle histograms"),
        "<h2 id='surrogate'>Surrogate accuracy per iteration</h2>",
    ]
    if accuracy:
        techs = list(state.targets)
        parts.append(_img(paths["surrogate_png"], "surrogate accuracy: predicted vs simulated mismatch"))
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
                _fmt(r["predicted_mean"]),
                _fmt(r["simulated_mean"]),
                _fmt(r["mae"]),
                _fmt(r["relative_error"], ".2f"),
                _fmt(r["rank_correlation"], ".2f"),
            ]
            + [_fmt(r.get(f"heldout_mae_{t}")) for t in techs]
            + [_fmt(r.get(f"coverage_{t}"), ".2f") for t in techs]
            + [_fmt(r.get("n_train"))]
            for r in accuracy
        ]
        parts.append(_table(headers, table_rows, css_id="surrogate-table"))
    else:
        parts.append(
            f"<p class='muted'>No surrogate predictions: the {html.escape(state.config.optimizer)} optimizer proposes without one.</p>"
        )
    techs = list(state.targets)
    headers = ["rank", "candidate", "kind", "objective"] + [f"MSE {t}" for t in techs]
    headers += ["predicted", "shortest distance (Å)", "CIF", "fingerprint"]
    predicted = {r["fingerprint"]: r.get("predicted_objective") for r in rows}
    best_rows = []
    for i, e in enumerate(best):
        s = Structure.from_dict(e["structure"])
        cif = paths.get(f"best_{i + 1}")
        link = f"<a href='{cif.name}'>{cif.name}</a>" if cif is not None else "–"
        best_rows.append(
            [i + 1, f"{e['iteration']}:{e['candidate']}", _fmt(e.get("kind")), _fmt(e["objective"])]
            + [_fmt((e.get("mse") or {}).get(t)) for t in techs]
            + [
                _fmt(predicted.get(e["fingerprint"])),
                _fmt(_min_distance(s), ".3f"),
                link,
                _fmt(e["fingerprint"]),
            ]
        )
    parts += [
        "<h2 id='best'>Best structures</h2>",
        _table(headers, best_rows, left={2, 6 + len(techs), 7 + len(techs)}, css_id="best-table"),
    ]
    if failed:
        parts.append("<h2 id='failed'>Failed evaluations</h2>")
        parts.append(
            _table(
                ["candidate", "status", "kind", "reason"],
                [
                    [
                        f"{r['iteration']}:{r['candidate']}",
                        _fmt(r["status"]),
                        _fmt(r["failure_kind"]),
                        _fmt(r["error"]),
                    ]
                    for r in failed
                ],
                left={1, 2, 3},
                css_id="failed-table",
            )
        )
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    parts.append(
        f"<p class='muted'>Written by aso-workflows {html.escape(__version__)} at {stamp}. "
        "Figures are also beside this file as report_*.png; the full history is history.csv.</p></body></html>"
    )
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
