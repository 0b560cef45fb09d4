"""Orchestration overhead per iteration: wall time not spent in simulation, training or proposal code.

    python benchmarks/orchestration.py [--modes local slurm] [--iterations 4] [--out benchmarks/results/orchestration]

A campaign of tiny simulations (PDF of a 24-atom cell, ~10 ms each), q = 2 candidates per iteration, with a
tiny surrogate, is run locally (jobflow ``run_locally``, embedded store) and through Slurm (FireWorks offline
controller on the single-node test cluster; needs root and slurm-wlm + munge, started here). For each mode:

    overhead = wall − Σ simulation seconds − Σ training seconds − Σ proposal seconds

divided by the number of iterations. Writes ``orchestration.json``, ``orchestration.csv`` and a bar chart
``orchestration.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "linio2_jt_pdf"


def campaign_file(directory: Path, iterations: int, name: str) -> Path:
    initial = 3
    doc = {
        "name": name,
        "start": str(EXAMPLE / "start.cif"),
        "targets": [{"technique": "pdf", "structure": str(EXAMPLE / "target.cif")}],
        "budget": 1 + initial + 2 * iterations,
        "initial_size": initial,
        "batch_size": 2,
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.3},
        "min_distances": {"Ni-O": 1.7, "Li-O": 1.7, "O-O": 2.2},
        "surrogate": {"n_models": 2, "hidden": 16, "n_layers": 2, "n_rbf": 16, "epochs": 10, "patience": 5},
        "proposal": {"n_starts": 8, "steps": 5, "progress": False},
        "output": str(directory / "out"),
    }
    p = directory / "campaign.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def accounted(state) -> dict:
    sim = sum(
        (prov or {}).get("wall_time_s") or 0.0
        for e in state.evaluations(status=None)
        for prov in (e.get("provenance") or {}).values()
    )
    train = sum(m.get("seconds") or 0.0 for m in state.db.models.find({"campaign": state.name}))
    props = {}
    for p in state.proposals():
        if p["iteration"] > 0:
            props[p["iteration"]] = p.get("seconds") or 0.0
    return {
        "simulation_s": sim,
        "training_s": train,
        "proposal_s": sum(props.values()),
        "iterations": state.last_iteration() + 1,
    }


def run_local(directory: Path, iterations: int) -> dict:
    from aso_workflows.campaign.local import LocalCampaignRunner
    from aso_workflows.config import load_config

    cfg = load_config(campaign_file(directory, iterations, "orch-local"))
    t0 = time.perf_counter()
    state = LocalCampaignRunner(progress=False, write_outputs=False).run(cfg)
    wall = time.perf_counter() - t0
    return {"mode": "local", "wall_s": wall, "jobs": None, **accounted(state)}


def run_slurm(directory: Path, iterations: int) -> dict:
    from aso_workflows.campaign.cluster import ClusterCampaignRunner
    from aso_workflows.cluster.queues import slurm_queue
    from aso_workflows.config import load_config
    from aso_workflows.jobstore import shared_job_store
    from aso_workflows.testing.launchpad import mongomock_launchpad
    from aso_workflows.testing.slurm_testbed import SlurmTestbed, testbed_unavailable_reason

    reason = testbed_unavailable_reason()
    if reason:
        raise SystemExit(f"slurm mode unavailable: {reason}")
    common = {"walltime": "00:10:00", "nodes": 1, "ntasks": 1, "cpus_per_task": 1}
    with SlurmTestbed() as _bed:
        queues = {
            "default": slurm_queue("cpu", partition="cpu", **common),
            "gpu": slurm_queue("gpu", partition="gpu", gres="gpu:1", **common),
        }
        cfg = load_config(campaign_file(directory, iterations, "orch-slurm"))
        runner = ClusterCampaignRunner(
            launchpad=mongomock_launchpad(),
            launch_dir=directory / "launches",
            queues=queues,
            job_store=shared_job_store(directory / "jobstore"),
            poll_interval=0.5,
        )
        t0 = time.perf_counter()
        state, summary = runner.run(cfg, write_outputs=False)
        wall = time.perf_counter() - t0
    failed = {r.name: r.error for r in summary.launches if r.state != "COMPLETED"}
    return {
        "mode": "slurm",
        "wall_s": wall,
        "jobs": len(summary.launches),
        "workflow_state": summary.workflow_state,
        "failed_jobs": failed,
        **accounted(state),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", nargs="+", default=["local", "slurm"], choices=["local", "slurm"])
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "orchestration")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for mode in args.modes:
        with tempfile.TemporaryDirectory(prefix=f"aso-orch-{mode}-") as tmp:
            r = (run_local if mode == "local" else run_slurm)(Path(tmp), args.iterations)
        r["overhead_s"] = r["wall_s"] - r["simulation_s"] - r["training_s"] - r["proposal_s"]
        r["overhead_per_iteration_s"] = r["overhead_s"] / max(r["iterations"], 1)
        rows.append({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()})
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "orchestration.json").write_text(json.dumps(rows, indent=1))
    with open(args.out / "orchestration.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(
        [r["mode"] for r in rows],
        [r["overhead_per_iteration_s"] for r in rows],
        color=["C0", "C1"][: len(rows)],
    )
    ax.set_ylabel("orchestration overhead per iteration (s)")
    ax.set_title("wall − simulation − training − proposal")
    fig.tight_layout()
    fig.savefig(args.out / "orchestration.png", dpi=120)
    print(f"wrote {args.out / 'orchestration.json'}")


if __name__ == "__main__":
    main()
