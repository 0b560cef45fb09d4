"""Proposal search speed: start-steps per second vs atoms and ensemble size, this code against a baseline.

    python benchmarks/proposal_speed.py [--atoms 24 48 96 200] [--members 1 5] [--steps 20]
        [--baseline dd98690] [--prior-atoms 24] [--prior-baseline ddeb339] [--threads 1]
        [--devices cpu cuda] [--out benchmarks/results/proposal_speed]

For every cell size and ensemble size, the same proposal search (``GradientProposer.propose``: starts
from the structure itself and fresh perturbations of it, Adam on positions, minimum-distance penalty,
final exact check) runs once with this checkout's code and once with the ``--baseline`` commit's
``aso_workflows`` (extracted with ``git archive`` into a temporary folder and imported from there in a
subprocess: the old code path stays callable without living in the product). The two runs of a
configuration are made back to back in fresh processes, so they see the same machine load.

Cells: LiNiO2 (the main job's R-3m start, primitive cell of 4 atoms) as 3×2×1, 3×2×2, 4×3×2 and 5×5×2
supercells (24, 48, 96, 200 atoms). Surrogate: the campaign's PDF ensemble (node level, 6 Å message
passing, readout to rmax + 1 = 11 Å, 900 outputs), untrained: its cost does not depend on the weights.
Starts per search: ``min(128, 3072 // atoms)`` (the reference's 128 for 24 atoms; fewer for large cells
so that the old code fits the memory and the time), plus one warm-up search of 2 starts × 1 step.

Rate = starts × (steps + 1) / seconds of the whole ``propose`` call (the search evaluates every start
``steps + 1`` times); wall and CPU seconds are both recorded, with the load average before and after.

``--precision`` (on by default) also measures what float32 costs in accuracy: the main job's surrogate
(no physics prior) trained on 20 pdffit2-simulated perturbations of its start, predicting 32 more in
float32 and float64 (largest differences of the mean, the spread, the acquisition and its gradient), and
the float64 search rate.

``--prior-atoms`` (default 24): the same search through the campaign's PDF surrogate with the physics
prior (pdffit2's G(r) in torch; fitted on 5 simulated perturbations, which it explains exactly, so it
stands alone: the README main job's surrogate), against ``--prior-baseline`` (the prior as it came from
its author, before its hot path was reworked here).

With ``cuda`` in ``--devices`` and a GPU present, the new code also runs on it (``device: cuda``).

Writes ``results.json`` and ``proposal_speed.png`` (start-steps per CPU-second, and the new/old ratios
of the wall-clock and the CPU rates, vs atoms) in ``--out``; ``--replot`` redraws the plot only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START = ROOT / "examples" / "linio2_jt_pdf" / "start.cif"
#: main at the start of issue 21 (before the skin lists and the batched readout)
BASELINE = "dd98690"
#: i21a after merging the PDF prior into it, before the prior's hot path was reworked
PRIOR_BASELINE = "ddeb339"
SUPERCELLS = {24: (3, 2, 1), 48: (3, 2, 2), 96: (4, 3, 2), 200: (5, 5, 2)}
MIN_DISTANCES = {"Ni-O": 1.7, "Li-O": 1.7, "O-O": 2.2}
PDF: dict[str, Any] = {"rmin": 1.0, "rmax": 10.0, "rstep": 0.01, "qmin": 1.0, "qmax": 18.0, "biso": 2.0}


# ---- worker (runs in a subprocess, with the old or the new package on its path) --------------------
def cell(atoms: int):
    """The LiNiO2 supercell of ``atoms`` atoms (sites sorted by element)."""
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prim = Structure.from_file(str(START)).get_primitive_structure()
    s = prim.copy()
    s.make_supercell(SUPERCELLS[atoms])
    s = s.get_sorted_structure()
    assert len(s) == atoms, (atoms, len(s))
    return s


def search(job: dict) -> dict:
    """One timed proposal search; ``job``: atoms, members, starts, steps, threads, device, dtype."""
    import torch

    from aso_workflows.optimizers.aso.acquisition import LowerConfidenceBound
    from aso_workflows.optimizers.aso.proposal import GradientProposer
    from aso_workflows.optimizers.sampling import PerturbationSampler, min_distance_matrix
    from aso_workflows.surrogate.ensemble import EnsembleSurrogate
    from aso_workflows.surrogate.settings import SurrogateSettings

    torch.set_num_threads(job["threads"])
    s = cell(job["atoms"])
    dmin = min_distance_matrix(s, MIN_DISTANCES, reference=s)
    sampler = PerturbationSampler(
        min_displacement=0.05, max_displacement=0.4, min_distances=MIN_DISTANCES, seed=1
    )
    target = sampler.sample(s, 1)[0]
    if job.get("prior"):
        sur = prior_surrogate(s, sampler, job)
    else:
        settings = SurrogateSettings(
            n_models=job["members"],
            readout_cutoff=PDF["rmax"] + 1.0,
            progress=False,
            device=job["device"],
            dtype=job["dtype"],
        )
        sur = EnsembleSurrogate([x.specie.symbol for x in s], 900, "node", settings=settings)
    with torch.no_grad():
        pos = torch.tensor(target.cart_coords)[None]
        mean, _ = sur.predict_torch(pos, torch.tensor(target.lattice.matrix)[None])
    acq = LowerConfidenceBound(targets={"pdf": mean[0].double().cpu().numpy()}, lam=0.1)
    kw = {"q": 1, "progress": False, "seed": 0, "device": job["device"], "dtype": job["dtype"]}
    predict = {"pdf": sur.predict_torch}
    GradientProposer(n_starts=2, steps=1, **kw).propose([s], predict, acq, dmin, reference=s, sampler=sampler)
    proposer = GradientProposer(n_starts=job["starts"], steps=job["steps"], **kw)
    load0 = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    out = proposer.propose([s], predict, acq, dmin, reference=s, sampler=sampler)
    if job["device"].startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    evaluations = job["starts"] * (job["steps"] + 1)
    return {
        **job,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "rate_wall": evaluations / wall,
        "rate_cpu": evaluations / cpu,
        "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "best_acquisition": float(out[0].acquisition),
        "valid": int(out[0].search.get("valid", -1)),
    }


def prior_surrogate(s, sampler, job: dict):
    """The campaign's PDF surrogate with the physics prior (pdffit2's G(r) in torch), fitted on 5
    simulated perturbations: the prior explains them exactly, so it stands alone (no ensemble)."""
    from aso_workflows.spectra.pdf import PDFSimulator
    from aso_workflows.surrogate.factory import surrogate_for_target
    from aso_workflows.surrogate.settings import SurrogateSettings

    sim = PDFSimulator(**PDF)
    structures = sampler.sample(s, 5)
    spectra = [sim.simulate(x) for x in structures]
    settings = SurrogateSettings(progress=False, device=job["device"], dtype=job["dtype"])
    species = [x.specie.symbol for x in s]
    sur = surrogate_for_target("pdf", spectra[0].grid, species, settings, simulator=sim)
    sur.fit(structures, spectra)
    return sur


def precision(threads: int) -> dict:
    """float32 against float64 on the main job's trained surrogate (no physics prior)."""
    import numpy as np
    import torch

    from aso_workflows.optimizers.aso.acquisition import LowerConfidenceBound
    from aso_workflows.optimizers.sampling import PerturbationSampler
    from aso_workflows.spectra.pdf import PDFSimulator
    from aso_workflows.spectra.pdf_partials import simulate_with_sites
    from aso_workflows.surrogate.ensemble import EnsembleSurrogate
    from aso_workflows.surrogate.settings import SurrogateSettings

    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pymatgen.core import Structure

        start = Structure.from_file(str(START))
        target = Structure.from_file(str(START.parent / "target.cif"))
    sampler = PerturbationSampler(
        min_displacement=0.05, max_displacement=0.4, min_distances=MIN_DISTANCES, seed=0
    )
    structures = sampler.sample(start, 52)
    sim = PDFSimulator(**PDF)
    train = [simulate_with_sites(sim, s) for s in structures[:20]]
    y = np.asarray(sim.simulate(target).values)
    species = [x.specie.symbol for x in start]
    base: dict[str, Any] = dict(
        n_models=5, epochs=100, patience=20, readout_cutoff=PDF["rmax"] + 1.0, progress=False
    )
    sur = EnsembleSurrogate(species, len(y), "node", settings=SurrogateSettings(**base, dtype="float64"))
    sur.fit(structures[:20], train)
    acq = LowerConfidenceBound(targets={"pdf": y}, scales={"pdf": float(np.std(y))}, lam=0.1)
    test = structures[20:]
    pos = torch.tensor(np.stack([s.cart_coords for s in test]))
    lat = torch.tensor(np.stack([s.lattice.matrix for s in test]))
    out = {}
    for dtype in (torch.float64, torch.float32):
        sur.to(dtype=dtype)
        p = pos.to(dtype).requires_grad_()
        mean, std = sur.predict_torch(p, lat.to(dtype))
        value = acq({"pdf": mean}, {"pdf": std})
        (grad,) = torch.autograd.grad(value.sum(), p)
        out[str(dtype)] = [t.detach().double() for t in (mean, std, value, grad)]
    ref, low = out["torch.float64"], out["torch.float32"]

    def rel(k: int) -> float:
        return float((low[k] - ref[k]).abs().max() / ref[k].abs().max())

    return {
        "n_test": len(test),
        "mean_max_rel": rel(0),
        "std_max_rel": rel(1),
        "acquisition_max_abs": float((low[2] - ref[2]).abs().max()),
        "acquisition_range": float(ref[2].max() - ref[2].min()),
        "gradient_max_rel": rel(3),
        "rank_agreement": bool(torch.equal(torch.argsort(low[2]), torch.argsort(ref[2]))),
    }


# ---- driver ----------------------------------------------------------------------------------------
def baseline_tree(ref: str, folder: Path) -> Path:
    """``aso_workflows`` at ``ref`` under ``folder`` (git archive)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "aso_workflows"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def run_worker(job: dict, path: Path) -> dict:
    """``search(job)`` (or ``precision``) in a fresh process importing ``aso_workflows`` from ``path``."""
    env = {**os.environ, "PYTHONPATH": str(path)}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(job)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {**job, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        r
        for r in results["searches"]
        if "error" not in r and r["dtype"] == "float32" and r["device"] == "cpu"
    ]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k in sorted({r["members"] for r in rows}):
        for version, style in (("old", "--"), ("new", "-")):
            sel = sorted(
                (r for r in rows if r["members"] == k and r["version"] == version), key=lambda r: r["atoms"]
            )
            if sel:
                atoms = [r["atoms"] for r in sel]
                ax.plot(atoms, [r["rate_cpu"] for r in sel], style, marker="o", label=f"{version}, K = {k}")
        ratios = results["ratios"].get(str(k), {})
        if ratios:
            atoms = sorted(int(a) for a in ratios)
            ax2.plot(atoms, [ratios[str(a)]["wall"] for a in atoms], marker="o", label=f"K = {k}, wall")
            ax2.plot(atoms, [ratios[str(a)]["cpu"] for a in atoms], marker="s", ls=":", label=f"K = {k}, CPU")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="atoms",
        ylabel="start-steps per CPU-second",
        title=f"proposal search, CPU, {results['threads']} thread(s)",
    )
    ax.legend(fontsize=8)
    ax2.axhline(10, color="grey", lw=0.8, ls="--")
    ax2.set(
        xscale="log",
        xlabel="atoms",
        ylabel="new / old",
        title=f"speed-up (target 10×), load {results['load']}",
    )
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--atoms", type=int, nargs="+", default=sorted(SUPERCELLS), choices=sorted(SUPERCELLS))
    ap.add_argument("--members", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    ap.add_argument("--no-precision", action="store_true")
    ap.add_argument("--prior-atoms", type=int, nargs="*", default=[24], choices=sorted(SUPERCELLS))
    ap.add_argument("--prior-baseline", default=PRIOR_BASELINE)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "proposal_speed")
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from --out/results.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replot:
        plot(json.loads((args.out / "results.json").read_text()), args.out / "proposal_speed.png")
        return
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(precision(job["threads"]) if job.get("precision") else search(job)))
        return
    import torch

    devices = [d for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": " ".join(sys.argv),
        "baseline": args.baseline,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "searches": [],
        "ratios": {},
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        old = baseline_tree(args.baseline, Path(tmp) / "gnn")
        for atoms in args.atoms:
            for k in args.members:
                job = {
                    "atoms": atoms,
                    "members": k,
                    "starts": min(128, 3072 // atoms),
                    "steps": args.steps,
                    "threads": args.threads,
                    "device": "cpu",
                    "dtype": "float32",
                }
                pair = {}
                for version, path in (("new", ROOT), ("old", old)):
                    r = run_worker(job, path)
                    r["version"] = version
                    results["searches"].append(r)
                    pair[version] = r
                    print(json.dumps(r), flush=True)
                if all("error" not in r for r in pair.values()):
                    results["ratios"].setdefault(str(k), {})[str(atoms)] = {
                        "wall": pair["new"]["rate_wall"] / pair["old"]["rate_wall"],
                        "cpu": pair["new"]["rate_cpu"] / pair["old"]["rate_cpu"],
                    }
                extra = (
                    [{**job, "dtype": "float64"}]
                    if k == max(args.members) and atoms == min(args.atoms)
                    else []
                )
                extra += [{**job, "device": "cuda"}] if "cuda" in devices else []
                for more in extra:
                    r = {**run_worker(more, ROOT), "version": "new"}
                    results["searches"].append(r)
                    print(json.dumps(r), flush=True)
                load.append(os.getloadavg()[0])
        if args.prior_atoms:  # the PDF prior (the main job's surrogate) against its own baseline
            old_prior = baseline_tree(args.prior_baseline, Path(tmp) / "prior")
            results["prior_baseline"], results["prior"] = args.prior_baseline, []
            for atoms in args.prior_atoms:
                job = {
                    "prior": True,
                    "atoms": atoms,
                    "members": 0,
                    "starts": min(128, 3072 // atoms),
                    "steps": args.steps,
                    "threads": args.threads,
                    "device": "cpu",
                    "dtype": "float32",
                }
                for version, path in (("new", ROOT), ("old", old_prior)):
                    r = {**run_worker(job, path), "version": version}
                    results["prior"].append(r)
                    print(json.dumps(r), flush=True)
                load.append(os.getloadavg()[0])
    if not args.no_precision:
        results["precision"] = run_worker({"precision": True, "threads": args.threads}, ROOT)
        print(json.dumps(results["precision"]), flush=True)
    results["load"] = f"{min(load):.1f}–{max(load):.1f}"
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "proposal_speed.png")
    print(f"wrote {args.out / 'results.json'} and proposal_speed.png")


if __name__ == "__main__":
    main()
