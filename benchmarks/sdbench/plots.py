"""The structure-determination benchmark's plots: median curves, per-case curves, surrogate accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdbench.suites import SuiteSettings

__all__ = ["plot_median", "plot_accuracy", "plot_cases"]


def plot_median(runs, methods, s: SuiteSettings, path: Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    x = np.arange(1, s.budget + 1)
    bases = []
    for m in methods:
        b = m.split("/")[0]
        if b not in bases:
            bases.append(b)
    styles = {"": "-", "calc": "--", "fd": ":"}
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        base, _, suffix = m.partition("/")
        k = bases.index(base)
        rel = np.array([np.asarray(r["curve"][: s.budget]) / r["start_objective"] for r in rs])
        ax.semilogy(
            x, np.median(rel, axis=0), color=f"C{k}", ls=styles[suffix], lw=2, label=f"{m} (n={len(rs)})"
        )
        if len(rs) > 1 and not suffix:
            lo, hi = np.percentile(rel, [25, 75], axis=0)
            ax.fill_between(x, lo, hi, color=f"C{k}", alpha=0.10)
    ax.axvline(s.initial_size + 1, color="0.5", ls=":", lw=1, label="end of initial data")
    ax.set_xlabel("simulations (/calc: PDF or FEFF calculations; /fd: finite-difference forward calls)")
    ax.set_ylabel("best mismatch / start mismatch (median)")
    ax.set_title(
        f"{s.name}{': ' + title + ' cases' if title else ''}: median over cases × seeds (band: quartiles)",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy(runs, strata, path: Path) -> None:
    """Held-out MAE/MAD vs training structures, median over runs, per method (and stratum)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    methods = sorted({r["method"] for r in runs if r.get("surrogate_accuracy")})
    groups = [("near", "-"), ("far", "--")] if strata else [(None, "-")]
    for k, m in enumerate(methods):
        for g, ls in groups:
            rs = [
                r
                for r in runs
                if r["method"] == m
                and r.get("surrogate_accuracy")
                and (g is None or strata.get(r["case"]) == g)
            ]
            if not rs:
                continue
            for ax, key in zip(axes, ("heldout_mae_over_mad", "coverage_1sigma"), strict=True):
                by_n: dict[int, list[float]] = {}
                for r in rs:
                    for a in r["surrogate_accuracy"]:
                        if a.get(key) is not None and a.get("n_train"):
                            by_n.setdefault(int(a["n_train"]), []).append(float(a[key]))
                if not by_n:
                    continue
                ns = sorted(by_n)
                ax.plot(
                    ns,
                    [np.median(by_n[n]) for n in ns],
                    color=f"C{k}",
                    ls=ls,
                    label=f"{m}" + (f" ({g})" if g else ""),
                )
    axes[0].set_ylabel("held-out MAE / MAD (median)")
    axes[1].set_ylabel("held-out coverage ±1σ (median)")
    axes[1].axhline(0.68, color="0.5", ls=":", lw=1)
    for ax in axes:
        ax.set_xlabel("training structures")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cases(runs, methods, s: SuiteSettings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["case"] for r in runs})
    ncol = min(4, len(names))
    nrow = -(-len(names) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    x = np.arange(1, s.budget + 1)
    bases = []
    for m in methods:
        if m.split("/")[0] not in bases:
            bases.append(m.split("/")[0])
    styles = {"": "-", "calc": "--", "fd": ":"}
    for ax, name in zip(axes.flat, names, strict=False):
        for m in methods:
            base, _, suffix = m.partition("/")
            for r in (r for r in runs if r["case"] == name and r["method"] == m):
                ax.semilogy(
                    x,
                    r["curve"][: s.budget],
                    color=f"C{bases.index(base)}",
                    ls=styles[suffix],
                    lw=1.2,
                    label=m if r["seed"] == s.seeds[0] else None,
                )
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("simulations (/calc, /fd: calculations)")
    fig.supylabel("best mismatch so far")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
