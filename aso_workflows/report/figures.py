"""The report's figures (matplotlib, one method per PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Structure

from aso_workflows.report.descriptors import bond_angles, first_shell_cutoffs, neighbour_distances
from aso_workflows.report.history import pairs_by_iteration
from aso_workflows.schemas import EvaluationDoc
from aso_workflows.spectra.techniques import get_technique

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from aso_workflows.campaign.state import CampaignState

__all__ = ["ReportFigures"]


class ReportFigures:
    """The report's matplotlib figures (one method per PNG), sharing the data they all use."""

    def __init__(self, state: CampaignState, rows: list[dict], best: list[EvaluationDoc]) -> None:
        self.state = state
        self.rows = rows
        self.done = [r for r in rows if r["status"] == "completed"]
        self.best = best[0]
        self.start_eval = next((e for e in state.evaluation_docs("completed") if e.kind == "start"), None)
        self.techniques = list(state.targets)
        self.structures = {"start": state.start, "best": self.best.pmg_structure()}
        if state.doc.get("target_structure"):
            self.structures["target"] = Structure.from_dict(state.doc["target_structure"])
        self.cutoffs = first_shell_cutoffs(state.start)

    @staticmethod
    def _save(fig: Figure, path: Path) -> Path:
        import matplotlib.pyplot as plt

        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    _COLORS = {"start": "C3", "best": "C0", "target": "k"}

    # -- panels
    def _convergence(self, ax: Axes) -> None:
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

    def _spectrum(self, ax: Axes, technique: str, residual: bool = False) -> None:
        tgt = self.state.targets[technique]
        ax.plot(tgt.x, tgt.y, "k-", lw=1.5, label="target")
        if self.start_eval is not None:
            s = self.state.spectrum(self.start_eval.spectra[technique])
            ax.plot(s.x, s.y, "C3--", lw=1, label="start")
        b = self.state.spectrum(self.best.spectra[technique])
        ax.plot(b.x, b.y, "C0-", lw=1, label="best")
        if residual:
            y = np.asarray(tgt.y, dtype=float)
            offset = y.min() - 0.15 * float(np.ptp(y) or 1.0)
            ax.plot(b.x, np.asarray(b.y) - y + offset, color="0.45", lw=0.8, label="best − target (offset)")
        ax.set_xlabel(f"{tgt.grid.name} ({tgt.grid.unit})")
        ax.set_ylabel(get_technique(technique).y_label)
        ax.set_title(technique.upper())
        ax.legend(fontsize=8)

    def _distances(self, ax: Axes) -> None:
        bins = np.linspace(0.5, 4.0, 71).tolist()  # matplotlib types bins as a sequence, not an array
        for label, s in self.structures.items():
            ax.hist(
                neighbour_distances(s), bins=bins, histtype="step", color=self._COLORS[label], label=label
            )
        ax.set_xlabel("neighbour distance (Å)")
        ax.set_ylabel("count")
        ax.set_title("neighbour distances")
        ax.legend(fontsize=8)

    def _angles(self, ax: Axes) -> None:
        bins = np.linspace(0, 180, 91).tolist()
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

    def xas_targets(self) -> list[str]:
        """The targets made from raw μ(E) (their processing is plotted by :meth:`xas_processing`)."""
        return [t for t in self.techniques if (self.state.targets[t].extra.get("xas") or {}).get("energy")]

    def xas_processing(self, path: Path) -> Path:
        """Each raw-μ(E) target: μ(E) with Larch's pre-edge line, post-edge curve and AUTOBK background,
        and what the campaign fits (EXAFS: k-weighted χ(k) on the simulator's grid, over AUTOBK's whole
        χ(k); XANES: normalised μ(E))."""
        import matplotlib.pyplot as plt

        techs = self.xas_targets()
        fig, axes = plt.subplots(len(techs), 2, figsize=(11.0, 4.0 * len(techs)), squeeze=False)
        for row, t in zip(axes, techs, strict=True):
            self._mu(row[0], t)
            self._fitted_data(row[1], t)
        return self._save(fig, path)

    def _mu(self, ax: Axes, technique: str) -> None:
        tgt = self.state.targets[technique]
        xas, used = tgt.extra["xas"], tgt.settings.get("processed", {})
        e = np.asarray(xas["energy"])
        ax.plot(e, xas["mu"], "k-", lw=1.2, label="μ(E)")
        ax.plot(e, xas["pre_edge"], "C1--", lw=1, label="pre-edge line")
        above = e >= used.get("e0", e[0])  # the post-edge curve means something above E0 only
        ax.plot(e[above], np.asarray(xas["post_edge"])[above], "C2--", lw=1, label="post-edge curve")
        if xas.get("bkg"):
            ax.plot(e, xas["bkg"], "C0-", lw=1, label=f"AUTOBK background (rbkg {used.get('rbkg', 0):g} Å)")
        if "e0" in used:
            ax.axvline(used["e0"], color="0.6", lw=0.8, ls=":", label=f"E0 {used['e0']:.1f} eV")
        ax.set_xlabel("E (eV)")
        ax.set_ylabel("μ(E)")
        ax.set_title(
            f"{technique.upper()} target: {Path(tgt.source).name}, step {used.get('edge_step', 0):.3g}",
            fontsize=9,
        )
        ax.legend(fontsize=7)

    def _fitted_data(self, ax: Axes, technique: str) -> None:
        tgt = self.state.targets[technique]
        xas = tgt.extra["xas"]
        if xas.get("k"):
            w = float(tgt.settings.get("kweight", 0.0) or 0.0)
            k = np.asarray(xas["k"])
            ax.plot(k, np.asarray(xas["chi"]) * k**w, color="0.6", lw=1, label="AUTOBK χ(k)")
            ax.plot(tgt.x, tgt.y, "k-", lw=1.3, label="fitted by the campaign")
            ax.set_ylabel(f"k^{w:g} χ(k)")
        else:
            ax.plot(
                np.asarray(xas["energy"]) - tgt.settings["processed"]["e0"],
                xas["flat"],
                color="0.6",
                lw=1,
                label="flattened μ(E)",
            )
            ax.plot(tgt.x, tgt.y, "k-", lw=1.3, label="fitted by the campaign")
            ax.set_ylabel("normalised μ(E)")
        ax.set_xlabel(get_technique(technique).x_label(tgt.grid.name, tgt.grid.unit))
        ax.set_title(f"{technique.upper()}: what the campaign fits", fontsize=9)
        ax.legend(fontsize=7)

    def structure(self, path: Path) -> Path:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2))
        self._distances(axes[0])
        self._angles(axes[1])
        return self._save(fig, path)

    def surrogate(self, path: Path, accuracy: list[dict]) -> Path:
        import matplotlib.pyplot as plt

        pairs = pairs_by_iteration(self.state)
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
