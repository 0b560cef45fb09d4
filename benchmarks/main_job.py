"""The README's main job at the reference search size: campaign time and best mismatch, this code against
a baseline, and seconds per iteration on the CPU and (when present) on CUDA.

    python benchmarks/main_job.py [--baseline dd98690] [--starts 128] [--steps 100]
        [--devices cpu cuda] [--threads 0] [--no-baseline] [--out benchmarks/results/main_job]

Runs ``examples/linio2_jt_pdf/campaign.yaml`` (LiNiO2 Jahn–Teller, X-ray PDF, budget 50) with the search
set to ``--starts`` × ``--steps`` (the reference's 128 × 100; the exploitation phase at the proposer's
CPU scale, ``cpu_exploit_scale``, on a CPU), each run in a fresh folder and process
(``python -m aso_workflows.cli run campaign.yaml --quiet``):

- ``new``: this checkout, on each of ``--devices`` that exists (``surrogate.device`` and
  ``proposal.device`` set to it);
- ``old``: the ``--baseline`` commit's ``aso_workflows`` (``git archive`` into a temporary folder, first on
  the subprocess's path), on the CPU — the code before issue 21, kept callable without living in the
  product.

Per run: wall seconds and CPU seconds of the campaign process (``getrusage`` of the children: the
campaign part, no installs), the load average before and after, the best mismatch and its curve over the
simulations, and per iteration the training and the proposal seconds from the store. Writes
``results.json`` and ``main_job.png`` (best mismatch vs simulations; time per iteration split).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE = ROOT / "examples" / "linio2_jt_pdf"
#: main at the start of issue 21
BASELINE = "dd98690"


def campaign_file(folder: Path, starts: int, steps: int, device: str) -> Path:
    """The example's campaign file in ``folder`` with the search size (and device) set."""
    import yaml

    for name in ("start.cif", "target.cif"):
        shutil.copy(EXAMPLE / name, folder / name)
    cfg = yaml.safe_load((EXAMPLE / "campaign.yaml").read_text())
    proposal = {k: v for k, v in (cfg.get("proposal") or {}).items() if k not in ("n_starts", "steps")}
    cfg["proposal"] = {**proposal, "n_starts": starts, "steps": steps}
    if device != "cpu":
        cfg["proposal"]["device"] = device
        cfg["surrogate"] = {**(cfg.get("surrogate") or {}), "device": device}
    path = folder / "campaign.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def read_back(path: Path) -> dict:
    """What the store holds after a run (runs in a subprocess with the run's own package)."""
    from aso_workflows.results import Campaign

    camp = Campaign.from_config(path)
    state = camp.state
    hist = camp.history()
    per_iter: dict[int, dict] = {}
    for m in state.model_docs():
        per_iter.setdefault(m.iteration, {})["train_s"] = float(m.seconds)
        per_iter[m.iteration]["model"] = str((m.metrics or {}).get("residual", "ensemble"))
    for p in state.proposal_docs():
        search = (p.predicted or {}).get("search") or {}
        it = per_iter.setdefault(p.iteration, {})
        if "seconds" in search:
            it["propose_s"] = float(search["seconds"])
            it["search"] = f"{search.get('n_starts')}×{search.get('steps')} {search.get('phase', '')}"
    return {
        "n_simulations": [int(x) for x in hist["n_simulations"]],
        "best": [None if x != x else float(x) for x in hist["best_objective"]],
        "best_mismatch": float(hist["best_objective"].min()),
        "start_mismatch": float(hist["objective"].iloc[0]),
        "iterations": {str(k): v for k, v in sorted(per_iter.items())},
    }


def run(label: str, package: Path, folder: Path, args: argparse.Namespace, device: str) -> dict:
    path = campaign_file(folder, args.starts, args.steps, device)
    env = {**os.environ, "PYTHONPATH": str(package)}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    load0 = os.getloadavg()[0]
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "aso_workflows.cli", "run", str(path), "--quiet"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {
        "label": label,
        "device": device,
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime - usage0.ru_utime + usage.ru_stime - usage0.ru_stime, 1),
        "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    if proc.returncode != 0:
        out["error"] = proc.stderr.strip().splitlines()[-5:]
        return out
    back = subprocess.run(
        [sys.executable, __file__, "--read-back", str(path)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    out.update(
        json.loads(back.stdout.strip().splitlines()[-1]) if back.returncode == 0 else {"error": back.stderr}
    )
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results["runs"] if "best" in r]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in runs:
        ax.plot(
            r["n_simulations"],
            r["best"],
            label=f"{r['label']} ({r['device']}): {r['wall_s']:.0f} s wall, {r['cpu_s']:.0f} CPU-s",
        )
    ax.set(
        yscale="log",
        xlabel="simulations",
        ylabel="best normalised mismatch",
        title=f"main job, {results['starts']} × {results['steps']} search",
    )
    ax.legend(fontsize=7)
    width = 0.8 / max(1, len(runs))
    for k, r in enumerate(runs):
        its = sorted(r["iterations"], key=int)
        x = [int(i) + k * width for i in its]
        train = [r["iterations"][i].get("train_s", 0.0) for i in its]
        prop = [r["iterations"][i].get("propose_s", 0.0) for i in its]
        ax2.bar(x, train, width, label=f"{r['label']} ({r['device']}) train")
        ax2.bar(x, prop, width, bottom=train, label=f"{r['label']} ({r['device']}) propose", alpha=0.6)
    ax2.set(xlabel="iteration", ylabel="seconds (wall)", title=f"per iteration, load {results['load']}")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--starts", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the runs (0: torch's default)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "main_job")
    ap.add_argument("--read-back", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_back:
        print(json.dumps(read_back(args.read_back)))
        return
    import torch

    devices = [d for d in args.devices if d == "cpu" or torch.cuda.is_available()]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "baseline": args.baseline,
        "starts": args.starts,
        "steps": args.steps,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "runs": [],
    }
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [("new", ROOT, d) for d in devices]
        if not args.no_baseline:
            old = Path(tmp) / "baseline"
            old.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline, "aso_workflows"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            jobs.append(("old", old, "cpu"))
        for label, package, device in jobs:
            folder = Path(tmp) / f"{label}-{device}"
            folder.mkdir()
            r = run(label, package, folder, args, device)
            results["runs"].append(r)
            load.append(os.getloadavg()[0])
            print(json.dumps({k: v for k, v in r.items() if k not in ("n_simulations", "best")}), flush=True)
    cpu = {r["label"]: r for r in results["runs"] if r["device"] == "cpu" and "cpu_s" in r}
    if "old" in cpu and "new" in cpu:
        results["ratio"] = {
            "wall": cpu["old"]["wall_s"] / cpu["new"]["wall_s"],
            "cpu": cpu["old"]["cpu_s"] / cpu["new"]["cpu_s"],
        }
    results["load"] = f"{min(load):.1f}–{max(load):.1f}"
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "main_job.png")
    print(f"wrote {args.out / 'results.json'} and main_job.png")


if __name__ == "__main__":
    main()
