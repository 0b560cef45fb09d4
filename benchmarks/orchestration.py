"""Orchestration on a real MongoDB server: per-iteration overhead on Slurm, job start-up, web GUI page times.

    python benchmarks/orchestration.py [--iterations 3] [--q 5] [--fireworks 1000]
                                       [--mongodb-uri URI] [--out benchmarks/results/orchestration]

Needs root with slurm-wlm + munge (the single-node test cluster is started here; run it under
``flock /work/slurm.lock`` where others share the machine) and a MongoDB server: ``--mongodb-uri``, else a
FerretDB started here (``aso_workflows.testing.ferretdb``, needs ``go`` once). Three parts:

1. **Slurm campaign** (PDF, LiNiO2, q candidates per iteration, tiny surrogate), driven by the offline
   controller with the LaunchPad and the campaign store on the server. Every Slurm job's turnaround
   (``submitted`` → result read back) is split into queue wait (submit → the job's Python process
   starts), start-up (process start → the Firework starts: interpreter, imports, reading ``FW.json``),
   the Firework itself (its work — simulation, training or proposal seconds as the store records them
   — and the rest: jobflow, store reads and writes), and read-back (Firework end → the controller has
   it). Per iteration, two numbers: the wall time minus the work on this testbed (2 cores: the q
   evaluations queue for a core), and the critical-path overhead a cluster with free nodes would see:
   the non-work time of the slowest evaluation + the training job + the proposal job.
2. **Evaluation-job start-up**: one evaluation job of the campaign run again, as Slurm ran it, under
   ``python -X importtime``: wall time of the process and what its imports cost, by package (is torch
   imported by a PDF evaluation?).
3. **Web GUI page times** with ``--fireworks`` Fireworks in the LaunchPad (the campaign's plus
   synthetic campaign-like workflows of 50): ``/``, ``/wf/<id>``, ``/fw/<id>`` and the campaign page
   ``/aso/campaign/<name>``, first (cold) and median of 5 loads, served by ``aso webgui``'s app.

Writes ``orchestration.json`` and ``orchestration.png`` (job time breakdown, overhead per iteration against
the 5 s target, page times) into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "linio2_jt_pdf"
TARGET_ITERATION_S = 5.0
TARGET_STARTUP_S = 1.0


def _t(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


# ---- 1. the Slurm campaign ----------------------------------------------------------------------------------
def campaign_file(folder: Path, uri: str, database: str, iterations: int, q: int) -> Path:
    import yaml

    doc = {
        "name": "orch",
        "start": str(EXAMPLE / "start.cif"),
        "targets": [{"technique": "pdf", "structure": str(EXAMPLE / "target.cif")}],
        "budget": 1 + q + q * iterations,
        "initial_size": q,
        "batch_size": q,
        "seed": 0,
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.3},
        "min_distances": {"Ni-O": 1.7, "Li-O": 1.7, "O-O": 2.2},
        "surrogate": {"n_models": 2, "hidden": 16, "n_layers": 2, "n_rbf": 16, "epochs": 10, "patience": 5},
        "proposal": {"n_starts": 8, "steps": 5, "progress": False},
        "store": {"kind": "mongodb", "uri": uri, "database": database},
        "output": str(folder / "out"),
    }
    p = folder / "campaign.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def run_campaign(folder: Path, uri: str, iterations: int, q: int) -> tuple[dict, object, object]:
    from aso_workflows.cluster.launchpad import load_launchpad
    from aso_workflows.cluster.queues import slurm_queue
    from aso_workflows.cluster.runner import ClusterCampaignRunner
    from aso_workflows.config import load_config
    from aso_workflows.jobstore import shared_job_store

    common = {"walltime": "00:10:00", "nodes": 1, "ntasks": 1, "cpus_per_task": 1}
    queues = {
        "default": slurm_queue("cpu", partition="cpu", **common),
        "gpu": slurm_queue("gpu", partition="gpu", gres="gpu:1", **common),
    }
    tag = uuid.uuid4().hex[:8]
    lp = load_launchpad(uri, database=f"orch_fw_{tag}")
    cfg = load_config(campaign_file(folder, uri, f"orch_aso_{tag}", iterations, q))
    runner = ClusterCampaignRunner(
        launchpad=lp,
        launch_dir=folder / "launches",
        queues=queues,
        job_store=shared_job_store(folder / "jobstore"),
        poll_interval=0.5,
    )
    t0 = time.perf_counter()
    state, summary = runner.run(cfg)
    wall = time.perf_counter() - t0
    return (
        {"wall_s": wall, "workflow_state": summary.workflow_state, "jobs": len(summary.launches)},
        state,
        summary,
    )


def job_breakdown(state, summary, lp) -> list[dict]:
    """One row per Slurm job: kind, iteration, and its turnaround split (seconds)."""
    by_job = {}
    for e in state.evaluations(status=None):
        for prov in (e.get("provenance") or {}).values():
            if prov and prov.get("slurm_job_id"):
                by_job[str(prov["slurm_job_id"])] = prov.get("wall_time_s") or 0.0
    train = {m["iteration"]: m.get("seconds") or 0.0 for m in state.db.models.find({"campaign": state.name})}
    propose: dict[int, float] = {}
    for p in state.proposals():
        if p["iteration"] > 0:
            propose[p["iteration"] - 1] = p.get("seconds") or 0.0  # proposed at the end of the one before
    rows = []
    for rec in summary.launches:
        if rec.state != "COMPLETED":
            continue
        tag = (
            (lp.fireworks.find_one({"fw_id": rec.fw_id}, {"spec._aso": 1}) or {})
            .get("spec", {})
            .get("_aso", {})
        )
        kind, it = tag.get("kind", "?"), tag.get("iteration", 0)
        work = {"evaluate": by_job.get(rec.slurm_job_id, 0.0), "train": train.get(it, 0.0)}.get(kind)
        if kind == "propose":
            work = propose.get(it, 0.0)
        submitted, started, fw_start, fw_end, back = map(
            _t, (rec.submitted, rec.process_start, rec.start, rec.end, rec.recovered)
        )
        if None in (submitted, started, fw_start, fw_end, back):
            continue
        work = work or 0.0
        rows.append(
            {
                "fw_id": rec.fw_id,
                "kind": kind,
                "iteration": it,
                "queue_s": started - submitted,
                "startup_s": fw_start - started,
                "firework_other_s": (fw_end - fw_start) - work,
                "work_s": work,
                "readback_s": back - fw_end,
                "turnaround_s": back - submitted,
                "submitted": submitted,
                "recovered": back,
            }
        )
    return rows


def per_iteration(rows: list[dict]) -> list[dict]:
    out = []
    for it in sorted({r["iteration"] for r in rows if r["kind"] == "propose"}):
        evals = [r for r in rows if r["kind"] == "evaluate" and r["iteration"] == it]
        train = [r for r in rows if r["kind"] == "train" and r["iteration"] == it]
        prop = [r for r in rows if r["kind"] == "propose" and r["iteration"] == it]
        if not evals or not train or not prop:
            continue
        chain = [max(evals, key=lambda r: r["turnaround_s"]), train[0], prop[0]]
        non_work = [r["turnaround_s"] - r["work_s"] for r in chain]
        # on a cluster with free nodes the q evaluations start at once: their queue wait here is for a core
        critical = sum(non_work) - chain[0]["queue_s"] + min(r["queue_s"] for r in evals)
        wall = prop[0]["recovered"] - min(r["submitted"] for r in evals)
        work = max(r["work_s"] for r in evals) + train[0]["work_s"] + prop[0]["work_s"]
        out.append(
            {
                "iteration": it,
                "q": len(evals),
                "wall_s": wall,
                "work_critical_path_s": work,
                "overhead_testbed_s": wall - work,
                "overhead_critical_path_s": critical,
                "non_work_by_job_s": {"evaluate": non_work[0], "train": non_work[1], "propose": non_work[2]},
            }
        )
    return out


# ---- 2. evaluation-job start-up under -X importtime ---------------------------------------------------------
def job_imports(summary, env: dict) -> dict:
    """Run one completed evaluation job's launch again (offline, as Slurm ran it) under ``-X importtime``."""
    rec = next(r for r in summary.launches if r.state == "COMPLETED" and r.name.endswith("/ pdf"))
    with tempfile.TemporaryDirectory(prefix="aso-orch-job-") as tmp:
        work = Path(tmp)
        shutil.copy(Path(rec.launch_dir) / "FW.json", work / "FW.json")
        offline = json.loads((Path(rec.launch_dir) / "FW_offline.json").read_text())
        (work / "FW_offline.json").write_text(json.dumps({"launch_id": offline["launch_id"]}))
        argv = [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "aso_workflows.cluster.rlaunch_shim",
            "singleshot",
            "--offline",
        ]
        t0 = time.perf_counter()
        done = subprocess.run(argv, cwd=work, capture_output=True, text=True, env=env, timeout=600)
        wall = time.perf_counter() - t0
        result = json.loads((work / "FW_offline.json").read_text())
    cumulative: dict[str, float] = {}
    torch_s = None
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        if m.group(3) == "torch":  # wherever it is imported from
            torch_s = int(m.group(1)) / 1e6
        if len(m.group(2)) == 1:  # top-level imports of the process
            top = m.group(3).split(".")[0]
            cumulative[top] = cumulative.get(top, 0.0) + int(m.group(1)) / 1e6
    fw_start, fw_end = _t(result.get("started_on")), _t(result.get("completed_on"))
    return {
        "fw_name": rec.name,
        "returncode": done.returncode,
        "process_wall_s": wall,
        "firework_s": (fw_end - fw_start) if fw_start and fw_end else None,
        "imports_s": sum(cumulative.values()),
        "imports_by_package_s": dict(sorted(cumulative.items(), key=lambda kv: -kv[1])[:15]),
        "torch_imported": torch_s is not None,
        "torch_import_s": torch_s,
    }


def python_floor(env: dict) -> dict:
    """Wall time of bare imports, for scale (median of 3)."""
    out = {}
    for label, code in {
        "python": "pass",
        "fireworks+jobflow+pymatgen+pdffit2": "import fireworks.scripts.rlaunch_run, jobflow.managers.fireworks, pymatgen.core, diffpy.pdffit2",
        "torch": "import torch",
    }.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - t0)
        out[label] = statistics.median(times)
    return out


# ---- 3. web GUI page times ----------------------------------------------------------------------------------
def fill_launchpad(lp, total: int, per_workflow: int = 50) -> int:
    """Add campaign-like workflows of ``per_workflow`` Fireworks until ``lp`` holds ``total``; half are
    COMPLETED with a launch that carries a mismatch (as evaluation Fireworks do). Returns the number added."""
    from fireworks import Firework, ScriptTask, Workflow

    have = lp.fireworks.count_documents({})
    added = 0
    k = 0
    while have + added < total:
        n = min(per_workflow, total - have - added)
        name = f"synthetic-{k}"
        fws = [
            Firework(
                [ScriptTask.from_str("true")],
                name=f"{name} / it {i // 5} / cand {i % 5} / pdf",
                spec={
                    "_aso": {
                        "campaign": name,
                        "iteration": i // 5,
                        "candidate": i % 5,
                        "kind": "evaluate",
                        "technique": "pdf",
                    }
                },
            )
            for i in range(n)
        ]
        mapping = lp.add_wf(Workflow(fws, name=name, metadata={"campaign": name}))
        for j, fw_id in enumerate(sorted(mapping.values())):
            if j % 2:
                continue
            launch_id = lp.fw_id_assigner.find_one_and_update({}, {"$inc": {"next_launch_id": 1}})[
                "next_launch_id"
            ]
            lp.launches.insert_one(
                {
                    "launch_id": launch_id,
                    "fw_id": fw_id,
                    "state": "COMPLETED",
                    "launch_dir": "/nonexistent",
                    "action": {"stored_data": {"mismatch": 0.01 + 0.001 * j, "status": "completed"}},
                    "state_history": [],
                }
            )
            lp.fireworks.update_one(
                {"fw_id": fw_id}, {"$set": {"state": "COMPLETED", "launches": [launch_id]}}
            )
            lp.workflows.update_one({"nodes": fw_id}, {"$set": {f"fw_states.{fw_id}": "COMPLETED"}})
        added += n
        k += 1
    return added


def page_times(lp, campaign: str, repeats: int = 5) -> dict:
    from aso_workflows.webgui.server import serve_in_thread

    fw = lp.fireworks.find_one({"spec._aso.campaign": campaign, "spec._aso.kind": "evaluate"}, {"fw_id": 1})
    big = lp.workflows.find_one({"name": {"$regex": "^synthetic"}}, {"nodes": 1})
    pages = {
        "/": "/",
        "/wf/<id> (campaign)": f"/wf/{fw['fw_id']}",
        "/wf/<id> (50 Fireworks)": f"/wf/{min(big['nodes'])}" if big else f"/wf/{fw['fw_id']}",
        "/fw/<id>": f"/fw/{fw['fw_id']}",
        "/aso/campaign/<name>": f"/aso/campaign/{campaign}",
    }
    out = {}
    with serve_in_thread(lp) as url:
        for label, path in pages.items():
            times = []
            for _ in range(repeats + 1):
                t0 = time.perf_counter()
                with urllib.request.urlopen(url + path, timeout=120) as resp:
                    body = resp.read()
                    assert resp.status == 200, (path, resp.status)
                times.append(time.perf_counter() - t0)
            out[label] = {"first_s": times[0], "median_s": statistics.median(times[1:]), "bytes": len(body)}
    return out


# ---- main -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def mongodb(uri: str | None, folder: Path):
    if uri:
        yield uri, "given"
        return
    from aso_workflows.testing.ferretdb import FerretDB

    with FerretDB(folder / "ferretdb") as server:
        yield server.uri(), "FerretDB v1.24.2 (patched test build), SQLite, 127.0.0.1"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    parts = ["queue_s", "startup_s", "firework_other_s", "work_s", "readback_s"]
    kinds = [
        k for k in ("evaluate", "train", "propose", "start") if any(r["kind"] == k for r in result["jobs"])
    ]
    bottom = [0.0] * len(kinds)
    for i, part in enumerate(parts):
        vals = [statistics.median([r[part] for r in result["jobs"] if r["kind"] == k]) for k in kinds]
        ax.bar(kinds, vals, bottom=bottom, label=part.removesuffix("_s").replace("_", " "), color=f"C{i}")
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("seconds (median per job)")
    ax.set_title("Slurm job turnaround: submit → result back")
    ax.legend(fontsize=8)
    ax = axes[1]
    its = [r["iteration"] for r in result["iterations"]]
    w = 0.38
    ax.bar(
        [i - w / 2 for i in its],
        [r["overhead_testbed_s"] for r in result["iterations"]],
        w,
        label="testbed (2 cores)",
    )
    ax.bar(
        [i + w / 2 for i in its],
        [r["overhead_critical_path_s"] for r in result["iterations"]],
        w,
        label="critical path (free nodes)",
    )
    ax.axhline(TARGET_ITERATION_S, color="k", ls="--", lw=1, label=f"target {TARGET_ITERATION_S:g} s")
    ax.set_xlabel("iteration")
    ax.set_ylabel("overhead per iteration (s)")
    ax.set_title(f"q = {result['q']}: wall − work per iteration")
    ax.legend(fontsize=8)
    ax = axes[2]
    labels = list(result["pages"])
    ax.barh(labels, [result["pages"][k]["median_s"] for k in labels], color="C2", label="median of 5")
    ax.plot([result["pages"][k]["first_s"] for k in labels], labels, "k|", ms=14, label="first load")
    ax.set_xlabel("seconds")
    ax.set_title(f"web GUI, {result['fireworks_in_launchpad']} Fireworks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--q", type=int, default=5, help="candidates per iteration (and initial structures)")
    ap.add_argument(
        "--fireworks", type=int, default=1000, help="Fireworks in the LaunchPad for the page times"
    )
    ap.add_argument("--mongodb-uri", default=os.environ.get("ASO_TEST_MONGODB_URI"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "orchestration")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from aso_workflows.testing.slurm_testbed import SlurmTestbed, testbed_unavailable_reason

    reason = testbed_unavailable_reason()
    if reason:
        raise SystemExit(f"the Slurm testbed cannot start: {reason}")
    with tempfile.TemporaryDirectory(prefix="aso-orch-") as tmp, SlurmTestbed() as bed:
        folder = Path(tmp)
        with mongodb(args.mongodb_uri, folder) as (uri, server):
            print(f"server: {server}; Slurm testbed: {bed.conf}", flush=True)
            campaign, state, summary = run_campaign(folder, uri, args.iterations, args.q)
            print(json.dumps(campaign), flush=True)
            from aso_workflows.cluster.launchpad import load_launchpad

            ref = (state.doc.get("executor") or {}).get("launchpad") or {}
            lp = load_launchpad(uri, database=ref.get("database"))
            jobs = job_breakdown(state, summary, lp)
            iterations = per_iteration(jobs)
            env = {**bed.env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
            imports = job_imports(summary, env)
            print(json.dumps({k: v for k, v in imports.items() if k != "imports_by_package_s"}), flush=True)
            floor = python_floor(env)
            added = fill_launchpad(lp, args.fireworks)
            n_fireworks = lp.fireworks.count_documents({})
            pages = page_times(lp, state.name)
    startup = [r["startup_s"] for r in jobs if r["kind"] == "evaluate"]
    result = {
        "server": server,
        "q": args.q,
        "iterations_requested": args.iterations,
        "campaign": campaign,
        "jobs": jobs,
        "iterations": iterations,
        "summary": {
            "overhead_per_iteration_testbed_s": statistics.median(
                [r["overhead_testbed_s"] for r in iterations]
            )
            if iterations
            else None,
            "overhead_per_iteration_critical_path_s": statistics.median(
                [r["overhead_critical_path_s"] for r in iterations]
            )
            if iterations
            else None,
            "target_overhead_per_iteration_s": TARGET_ITERATION_S,
            "evaluation_job_startup_median_s": statistics.median(startup) if startup else None,
            "target_evaluation_startup_s": TARGET_STARTUP_S,
            "evaluation_job_imports_s": imports["imports_s"],
            "evaluation_job_imports_torch": imports["torch_imported"],
            "page_median_s": {k: v["median_s"] for k, v in pages.items()},
        },
        "evaluation_job": imports,
        "import_floor_s": floor,
        "fireworks_in_launchpad": n_fireworks,
        "synthetic_fireworks_added": added,
        "pages": pages,
    }
    (args.out / "orchestration.json").write_text(json.dumps(result, indent=1))
    plot(result, args.out / "orchestration.png")
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {args.out / 'orchestration.json'} and orchestration.png")


if __name__ == "__main__":
    main()
