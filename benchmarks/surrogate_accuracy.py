"""Surrogate-accuracy benchmark: held-out error and calibration of the PDF surrogate per training-set size.

    python benchmarks/surrogate_accuracy.py                       # reduced cases, sizes 10 20 30, 20 test
        [--cases reduced | linio2-jt ht-003 ...] [--sizes 10 20 30] [--n-test 20] [--seeds 0]
        [--variants graph-6A graph node-6A node] [--settings reduced|default] [--out DIR]
    /work/venvs/.../bin/python benchmarks/surrogate_accuracy.py --variants torchmdnet   # where it imports

For every case (the reduced structure-determination cases by default) and seed, the campaign's sampler
draws ``max(sizes) + n_test`` perturbations of the start structure (the case's sampler range and minimum
distances, as a campaign's initial data), and pdffit2 simulates each with its per-atom contributions
(:func:`~aso_workflows.spectra.pdf_partials.simulate_with_sites`; the same spectra serve every variant).
Each variant trains on the first ``n`` structures, for each size, and predicts the last ``n_test``:

- ``mae``: mean |predicted mean − true G(r)| over test structures and grid points;
- ``mad``: mean |true G(r) − mean of the training G(r)| (the error of predicting the mean spectrum);
- ``ratio`` = ``mae / mad`` (< 1: better than the mean; the issue's target is ≤ 0.5 at 30 structures);
- calibration on the test set: ``coverage_1sigma`` (share of errors within ±1 calibrated σ; 0.68 for a
  calibrated Gaussian) and ``z_rms`` (RMS of error/σ; 1 when calibrated);
- ``spearman``: rank correlation of the predicted vs the true mismatch to the case's target (what the
  acquisition ranks candidates by);
- the fit's own numbers (``fit_ratio`` = its internal ``heldout_mae / target_mad``, as the campaign's
  model documents report it; ``calibration_scale``, ``epochs``, ``seconds``).

Variants: ``graph-6A`` (the surrogate before issue 12: one G(r) per structure, readout on the 6 Å
message-passing basis), ``graph`` (readout to rmax + 1 Å), ``node-6A`` and ``node`` (per-atom rows, the
reference's way). ``torchmdnet``: TorchMD-Net's equivariant transformer as the node-level model
(``benchmarks/tmdnet_surrogate.py``; only where ``torchmdnet`` imports).

Outputs in ``<out>`` (default ``benchmarks/results/surrogate_accuracy/<settings>``): ``data/`` (the
simulated structures, once), ``results.json`` (every fit; resumable: a fit already there is not redone),
``table.md`` and ``surrogate_accuracy.png`` (ratio and coverage vs training-set size per case).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from cases import REDUCED, BenchmarkCase, resolve_cases  # noqa: E402

PDF_SETTINGS: dict[str, Any] = {
    "rmin": 1.0,
    "rmax": 10.0,
    "rstep": 0.01,
    "qmin": 1.0,
    "qmax": 18.0,
    "biso": 2.0,
}
#: surrogate settings of the reduced structure-determination suite, and the package defaults
SETTINGS = {
    "reduced": {"n_models": 4, "epochs": 80, "patience": 15, "lr_patience": 8},
    "default": {},
}
VARIANTS = ["graph-6A", "graph", "node-6A", "node", "torchmdnet"]
DEFAULT_VARIANTS = ["node", "graph-6A", "graph"]
#: TorchMD-Net ET overrides (``--tmdnet-settings``); empty: the reference's ET (64 ch., 6 layers, 8 Å)
TMDNET: dict = {}


# ---- data -----------------------------------------------------------------------------------------
def case_data(case: BenchmarkCase, seed: int, n_total: int, folder: Path) -> dict:
    """Structures, G(r) and per-atom rows of ``n_total`` sampled perturbations (cached in ``folder``)."""
    from pymatgen.core import Structure

    from aso_workflows.optimizers.sampling import PerturbationSampler
    from aso_workflows.spectra.pdf import PDFSimulator
    from aso_workflows.spectra.pdf_partials import simulate_with_sites

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case.name}__s{seed}__n{n_total}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        structures = [Structure.from_dict(d) for d in meta.pop("structures")]
        return {"structures": structures, "g": z["g"], "rows": z["rows"], "target": z["target"], **meta}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = Structure.from_file(case.start)
        target = Structure.from_file(case.target)
    sampler = PerturbationSampler(**case.sampler, min_distances=dict(case.min_distances), seed=seed)
    structures = sampler.sample(start, n_total)
    sim = PDFSimulator(engine="pdffit2", **PDF_SETTINGS)
    t0 = time.perf_counter()
    spectra = [simulate_with_sites(sim, s) for s in structures]
    seconds = time.perf_counter() - t0
    info = [sp.extra["site_contributions"] for sp in spectra]
    meta = {
        "structures": [s.as_dict() for s in structures],
        "grid": sim.r().tolist(),
        "sampler": dataclasses.asdict(sampler),
        "simulation_seconds": round(seconds, 2),
        "site_engine_calls": int(np.median([i["engine_calls"] for i in info])),
        "site_seconds_median": float(np.median([i["seconds"] for i in info])),
        "total_seconds_median": float(np.median([i["total_seconds"] for i in info])),
        "max_rel_error": float(max(i["max_rel_error"] for i in info)),
    }
    g = np.array([sp.values for sp in spectra])
    rows = np.array([sp.site_values for sp in spectra], dtype=np.float32)
    tgt = np.array(sim.simulate(target).values)
    np.savez_compressed(path, g=g, rows=rows, target=tgt, meta=json.dumps(meta))
    del meta["structures"]
    return {"structures": structures, "g": g, "rows": rows, "target": tgt, **meta}


def _spectra(data: dict, idx: range, with_rows: bool) -> list:
    from aso_workflows.spectra.spectrum import Grid, Spectrum

    grid = Grid(name="r", unit="Å", values=data["grid"])
    n_atoms = data["rows"].shape[1]
    out = []
    for i in idx:
        kw = {}
        if with_rows:
            kw = {
                "site_values": data["rows"][i].astype(float).tolist(),
                "absorber_sites": list(range(n_atoms)),
            }
        out.append(Spectrum(technique="pdf", grid=grid, values=data["g"][i].tolist(), **kw))
    return out


# ---- one fit --------------------------------------------------------------------------------------
def make_surrogate(variant: str, data: dict, settings_kw: dict, seed: int):
    from aso_workflows.spectra.spectrum import Grid
    from aso_workflows.surrogate.ensemble import EnsembleSurrogate
    from aso_workflows.surrogate.factory import surrogate_for_target
    from aso_workflows.surrogate.settings import SurrogateSettings

    species = [site.specie.symbol for site in data["structures"][0]]
    grid = Grid(name="r", unit="Å", values=data["grid"])
    if variant == "torchmdnet":
        from tmdnet_surrogate import TorchMDNetSurrogate

        return TorchMDNetSurrogate(species, len(grid.values), seed=seed, **{**settings_kw, **TMDNET})
    level: Literal["node", "graph"] = "node" if variant.startswith("node") else "graph"
    settings = SurrogateSettings(
        **{**settings_kw, "pdf_level": level, "seed": seed, "progress": False, "device": "cpu"}
    )
    if variant.endswith("-6A"):  # the readout on the message-passing basis (before issue 12)
        return EnsembleSurrogate(species, len(grid.values), level=level, settings=settings)
    return surrogate_for_target("pdf", grid, species, settings)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def one_fit(variant: str, data: dict, n_train: int, n_test: int, settings_kw: dict, seed: int) -> dict:
    model = make_surrogate(variant, data, settings_kw, seed)
    n_all = len(data["structures"])
    train, test = range(n_train), range(n_all - n_test, n_all)
    node = variant.startswith("node") or variant == "torchmdnet"
    t0 = time.perf_counter()
    metrics = model.fit([data["structures"][i] for i in train], _spectra(data, train, node))
    fit_s = time.perf_counter() - t0
    mean, std = model.predict([data["structures"][i] for i in test])
    y = data["g"][list(test)]
    err = mean - y
    mad = float(np.abs(y - data["g"][list(train)].mean(0)).mean())
    mae = float(np.abs(err).mean())
    target = data["target"]
    true_mse = ((y - target) ** 2).mean(1)
    pred_mse = ((mean - target) ** 2).mean(1)
    fit_ratio = None
    if metrics.get("heldout_mae") is not None and metrics.get("target_mad"):
        fit_ratio = metrics["heldout_mae"] / metrics["target_mad"]
    return {
        "mae": mae,
        "mad": mad,
        "ratio": mae / mad,
        "coverage_1sigma": float((np.abs(err) <= std).mean()),
        "z_rms": float(np.sqrt(((err / np.maximum(std, 1e-12)) ** 2).mean())),
        "spearman": _spearman(pred_mse, true_mse),
        "fit_ratio": fit_ratio,
        "calibration_scale": metrics.get("calibration_scale"),
        "epochs": metrics.get("epochs"),
        "seconds": round(fit_s, 1),
    }


# ---- the suite ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.is_file() else {"fits": [], "data": {}}
    done = {(f["case"], f["seed"], f["variant"], f["n_train"]) for f in results["fits"]}
    cases = resolve_cases(args.cases, out / "cases")
    n_total = max(max(args.sizes) + args.n_test, args.pool or 0)
    settings_kw = dict(SETTINGS[args.settings])
    for case in cases:
        for seed in args.seeds:
            data = case_data(case, seed, n_total, out / "data")
            results["data"][f"{case.name}__s{seed}"] = {
                k: data[k]
                for k in (
                    "simulation_seconds",
                    "site_engine_calls",
                    "site_seconds_median",
                    "total_seconds_median",
                    "max_rel_error",
                )
            } | {"natoms": len(data["structures"][0]), "sampler": data["sampler"]}
            for variant in args.variants:
                for n in args.sizes:
                    if (case.name, seed, variant, n) in done:
                        continue
                    row = {"case": case.name, "seed": seed, "variant": variant, "n_train": n}
                    try:
                        row |= one_fit(variant, data, n, args.n_test, settings_kw, seed)
                    except Exception as exc:  # a failed fit is reported, the suite goes on
                        row["error"] = f"{type(exc).__name__}: {exc}"
                    results["fits"].append(row)
                    done.add((case.name, seed, variant, n))
                    print(json.dumps(row), flush=True)
                    res_path.write_text(json.dumps(results, indent=1))
    results["settings"] = {
        "surrogate": settings_kw,
        "tmdnet": dict(TMDNET),
        "pdf": PDF_SETTINGS,
        "sizes": args.sizes,
        "n_test": args.n_test,
        "threads": torch.get_num_threads(),
    }
    results["summary"] = summarize(results["fits"])
    res_path.write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(table(results["summary"], results["fits"]))
    plot(results["fits"], out / "surrogate_accuracy.png")
    return results


def merge(folders: list[str], out: Path) -> dict:
    """One results.json, table and plot from runs split over several processes (e.g. by case)."""
    merged: dict = {"fits": [], "data": {}}
    for f in folders:
        part = json.loads((Path(f) / "results.json").read_text())
        merged["fits"] += part["fits"]
        merged["data"].update(part["data"])
        merged.setdefault("settings", part.get("settings"))
    out.mkdir(parents=True, exist_ok=True)
    merged["summary"] = summarize(merged["fits"])
    (out / "results.json").write_text(json.dumps(merged, indent=1))
    (out / "table.md").write_text(table(merged["summary"], merged["fits"]))
    plot(merged["fits"], out / "surrogate_accuracy.png")
    return merged


def summarize(fits: list[dict]) -> list[dict]:
    """Median over cases and seeds per (variant, size)."""
    rows = []
    keys = sorted({(f["variant"], f["n_train"]) for f in fits if "error" not in f})
    for variant, n in keys:
        sel = [f for f in fits if f["variant"] == variant and f["n_train"] == n and "error" not in f]
        med = {
            k: float(np.median([f[k] for f in sel]))
            for k in ("ratio", "coverage_1sigma", "z_rms", "spearman")
        }
        rows.append(
            {
                "variant": variant,
                "n_train": n,
                "fits": len(sel),
                **med,
                "max_ratio": float(max(f["ratio"] for f in sel)),
                "seconds": float(np.median([f["seconds"] for f in sel])),
            }
        )
    return rows


def table(summary: list[dict], fits: list[dict]) -> str:
    lines = [
        "| variant | n | fits | median MAE/MAD | max MAE/MAD | coverage ±1σ | z RMS | Spearman | fit s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in summary:
        lines.append(
            f"| {r['variant']} | {r['n_train']} | {r['fits']} | {r['ratio']:.3f} | {r['max_ratio']:.3f} | "
            f"{r['coverage_1sigma']:.2f} | {r['z_rms']:.2f} | {r['spearman']:.2f} | {r['seconds']:.0f} |"
        )
    n_max = max((f["n_train"] for f in fits), default=0)
    variants = sorted({f["variant"] for f in fits})
    cases = sorted({f["case"] for f in fits})
    lines += ["", f"MAE/MAD per case at n = {n_max} (median over seeds):", ""]
    lines.append("| case | " + " | ".join(variants) + " |")
    lines.append("| --- |" + " ---: |" * len(variants))
    for c in cases:
        cells = []
        for v in variants:
            sel = [
                f["ratio"]
                for f in fits
                if f["case"] == c and f["variant"] == v and f["n_train"] == n_max and "error" not in f
            ]
            cells.append(f"{np.median(sel):.3f}" if sel else "—")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    errors = [f for f in fits if "error" in f]
    if errors:
        lines += ["", "Failed fits:", ""] + [
            f"- {f['case']} {f['variant']} n={f['n_train']}: {f['error']}" for f in errors
        ]
    return "\n".join(lines) + "\n"


def plot(fits: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [f for f in fits if "error" not in f]
    if not ok:
        return
    cases = sorted({f["case"] for f in ok})
    variants = [v for v in VARIANTS if any(f["variant"] == v for f in ok)]
    fig, axes = plt.subplots(2, len(cases), figsize=(3.2 * len(cases), 6), squeeze=False, sharex=True)
    for j, c in enumerate(cases):
        for v in variants:
            sel = sorted((f for f in ok if f["case"] == c and f["variant"] == v), key=lambda f: f["n_train"])
            ns = sorted({f["n_train"] for f in sel})
            ratio = [np.median([f["ratio"] for f in sel if f["n_train"] == n]) for n in ns]
            cov = [np.median([f["coverage_1sigma"] for f in sel if f["n_train"] == n]) for n in ns]
            axes[0, j].plot(ns, ratio, "o-", label=v)
            axes[1, j].plot(ns, cov, "o-", label=v)
        axes[0, j].axhline(0.5, color="k", ls="--", lw=0.8)
        axes[0, j].axhline(1.0, color="grey", ls=":", lw=0.8)
        axes[1, j].axhline(0.68, color="k", ls="--", lw=0.8)
        axes[0, j].set_title(c)
        axes[0, j].set_ylim(0, max(1.3, axes[0, j].get_ylim()[1]))
        axes[1, j].set_ylim(0, 1)
        axes[1, j].set_xlabel("training structures")
    axes[0, 0].set_ylabel("held-out MAE / MAD")
    axes[1, 0].set_ylabel("coverage of ±1σ")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(REDUCED))
    ap.add_argument("--sizes", nargs="+", type=int, default=[10, 20, 30])
    ap.add_argument("--n-test", type=int, default=20)
    ap.add_argument(
        "--pool",
        type=int,
        default=0,
        help="structures drawn per case (default sizes + n-test; the test set is the last n-test of them, "
        "so keep it when adding sizes to a run)",
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=VARIANTS)
    ap.add_argument("--settings", default="reduced", choices=sorted(SETTINGS))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tmdnet-settings", default="{}", help="JSON overrides of the TorchMD-Net ET variant")
    ap.add_argument(
        "--merge", nargs="+", default=None, help="only merge the results.json of these folders into --out"
    )
    args = ap.parse_args(argv)
    TMDNET.update(json.loads(args.tmdnet_settings))
    if args.out is None:
        args.out = str(HERE / "results" / "surrogate_accuracy" / args.settings)
    results = merge(args.merge, Path(args.out)) if args.merge else run(args)
    print((Path(args.out) / "table.md").read_text())
    print(f"results: {Path(args.out) / 'results.json'}")
    del results


if __name__ == "__main__":
    main()
