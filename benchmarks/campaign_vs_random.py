"""ActiveStructOpt vs random search on a campaign example, several seeds, equal budget.

    python benchmarks/campaign_vs_random.py [--campaign examples/linio2_jt_pdf/campaign.yaml]
        [--seeds 0 1 2] [--budget N] [--out benchmarks/results/campaign_vs_random]

Runs the same campaign file with ``optimizer: aso`` and ``optimizer: random`` for each seed through the
same machinery (jobflow run_locally, embedded store), and writes ``results.json`` (best mismatch after n
simulations per run, start mismatch, wall time), ``curves.csv`` and ``median_best.png`` (median over seeds
of the best mismatch vs simulations, per method).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_one(campaign: Path, optimizer: str, seed: int, out: Path, budget: int | None) -> dict:
    from aso_workflows.campaign.local import LocalCampaignRunner
    from aso_workflows.config import ConfigOverrides, load_config
    from aso_workflows.report import history_rows, write_outputs

    overrides = ConfigOverrides(
        optimizer=optimizer,
        seed=seed,
        output=out / f"{optimizer}_seed{seed}",
        name=f"bench-{optimizer}-{seed}",
        budget=budget,
    )
    cfg = load_config(campaign, overrides)
    t0 = time.perf_counter()
    state = LocalCampaignRunner(progress=True).run(cfg)
    write_outputs(state, cfg.output_dir)
    rows = [r for r in history_rows(state) if r["status"] == "completed"]
    start = next(r["objective"] for r in rows if r["kind"] == "start")
    return {
        "optimizer": optimizer,
        "seed": seed,
        "budget": cfg.budget,
        "start_objective": start,
        "best_curve": [r["best_objective"] for r in rows],
        "best": min(r["objective"] for r in rows),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--campaign", type=Path, default=ROOT / "examples" / "linio2_jt_pdf" / "campaign.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--methods", nargs="+", default=["aso", "random"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "campaign_vs_random")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        for method in args.methods:
            r = run_one(args.campaign, method, seed, args.out, args.budget)
            runs.append(r)
            print(
                f"{method:7s} seed {seed}: start {r['start_objective']:.4g} best {r['best']:.4g} "
                f"({r['start_objective'] / r['best']:.1f}x) in {r['wall_s']} s",
                flush=True,
            )
    summary = {}
    for method in args.methods:
        rs = [r for r in runs if r["optimizer"] == method]
        summary[method] = {
            "median_best": float(np.median([r["best"] for r in rs])),
            "median_improvement_over_start": float(np.median([r["start_objective"] / r["best"] for r in rs])),
            "median_wall_s": float(np.median([r["wall_s"] for r in rs])),
        }
    result = {"campaign": str(args.campaign), "seeds": args.seeds, "runs": runs, "summary": summary}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    with open(args.out / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["optimizer", "seed", "n_simulations", "best_objective"])
        for r in runs:
            for n, b in enumerate(r["best_curve"], 1):
                w.writerow([r["optimizer"], r["seed"], n, b])
    _plot(runs, args.methods, args.out / "median_best.png")
    print(json.dumps(summary, indent=1))


def _plot(runs, methods, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, method in enumerate(methods):
        curves = [r["best_curve"] for r in runs if r["optimizer"] == method]
        n = min(len(c) for c in curves)
        arr = np.array([c[:n] for c in curves])
        x = np.arange(1, n + 1)
        ax.semilogy(x, np.median(arr, axis=0), color=f"C{k}", label=f"{method} (median of {len(curves)})")
        ax.fill_between(x, arr.min(0), arr.max(0), color=f"C{k}", alpha=0.15)
    start = np.median([r["start_objective"] for r in runs])
    ax.axhline(start, color="k", ls="--", lw=1, label="start structure")
    ax.set_xlabel("simulations")
    ax.set_ylabel("best mismatch so far")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
