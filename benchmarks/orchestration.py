"""Orchestration on a real MongoDB server: per-iteration overhead on Slurm and where it goes, job
start-up, web GUI page times; the code of another git revision measured in the same run for comparison.

    python benchmarks/orchestration.py [--iterations 3] [--q 5] [--fireworks 1000] [--baseline REV]
                                       [--mongodb-uri URI] [--out benchmarks/results/orchestration]

Needs root with slurm-wlm + munge (the single-node test cluster is started here; run it under
``flock /tmp/aso-cluster.lock`` where others share the machine) and a MongoDB server: ``--mongodb-uri``,
else a FerretDB started here (``aso_workflows.testing.ferretdb``, needs ``go`` once). Three parts:

1. **Slurm campaign** (PDF, LiNiO2, q candidates per iteration, tiny surrogate), driven by the offline
   controller with the LaunchPad and the campaign store on the server; with ``--baseline REV`` the same
   campaign runs first with the code of git revision REV (a detached worktree on ``PYTHONPATH``: the
   controller and every Slurm job import it), then with this checkout, on the same testbed and server.
   Every job's turnaround (``submitted`` → result read back) is split into Slurm queue wait (submit →
   the job script starts), script (→ Python starts), imports (→ ``rlaunch`` starts), Firework load (→
   the Firework starts), the Firework (its work — simulation, training or proposal seconds as the store
   records them — and the rest: jobflow, store reads and writes), result seen (Firework end → the
   controller notices) and read-back (``recover_offline``). Per iteration, from the moment its
   evaluations became READY to the moment its proposal was read back, the critical path (the last
   evaluation, the training, the proposal, and the controller's gaps between them) is split into the
   same parts; its overhead is the wall time minus the work minus the time the last evaluation waited
   for one of the testbed's 2 cores (a cluster with free nodes starts the q evaluations at once).
   The code of REV records fewer time stamps: its parts are coarser (queue, start-up, read-back).
2. **Evaluation-job start-up**: one evaluation job of the campaign run again, as Slurm ran it, under
   ``python -X importtime``: wall time of the process and what its imports cost, by package (is torch
   imported by a PDF evaluation?).
3. **Web GUI page times** with ``--fireworks`` Fireworks in the LaunchPad (the campaign's plus
   synthetic campaign-like workflows of 50): ``/``, ``/wf/<id>``, ``/fw/<id>`` and the campaign page
   ``/aso/campaign/<name>``, first (cold) and median of 5 loads, served by ``aso webgui``'s app
   (``--fireworks 0``: skipped).

Writes ``orchestration.json`` and ``orchestration.png`` (critical path per iteration by part, overhead
per iteration against the 5 s target, evaluation start-up against 1 s, page times) into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the types of this checkout (the runner itself is loaded from the code on the path)
    from aso_workflows.campaign.state import CampaignState
    from aso_workflows.cluster.slurm import RunSummary

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "linio2_jt_pdf"
TARGET_ITERATION_S = 5.0
TARGET_STARTUP_S = 1.0
PARTS = (
    "controller_s",
    "queue_s",
    "script_s",
    "imports_s",
    "load_s",
    "firework_other_s",
    "seen_s",
    "recover_s",
)
"""The parts of the critical path's overhead, in the order a job goes through them."""


def _t(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


def _median(values: list[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return statistics.median(have) if have else None


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


def _runner_class():
    """The Slurm campaign runner of the code on the path (it moved between revisions)."""
    for module in ("aso_workflows.cluster.runner", "aso_workflows.campaign.cluster"):
        with contextlib.suppress(ImportError):
            return __import__(module, fromlist=["ClusterCampaignRunner"]).ClusterCampaignRunner
    raise ImportError("no ClusterCampaignRunner in aso_workflows.cluster.runner or .campaign.cluster")


def run_campaign(folder: Path, uri: str, iterations: int, q: int) -> tuple[dict, CampaignState, RunSummary]:
    from aso_workflows.cluster.launchpad import load_launchpad
    from aso_workflows.cluster.queues import slurm_queue
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
    runner = _runner_class()(
        launchpad=lp,
        launch_dir=folder / "launches",
        queues=queues,
        job_store=shared_job_store(folder / "jobstore"),
    )  # the runner's own polling defaults: what users get
    t0 = time.perf_counter()
    older = "write_outputs" in inspect.signature(runner.run).parameters  # it wrote the report itself
    state, summary = runner.run(cfg, write_outputs=False) if older else runner.run(cfg)
    wall = time.perf_counter() - t0
    return (
        {"wall_s": wall, "workflow_state": summary.workflow_state, "jobs": len(summary.launches)},
        state,
        summary,
    )


def _work(state) -> tuple[dict[str, float], dict[int, float], dict[int, float]]:
    """Work seconds as the store records them: per Slurm job of an evaluation, per iteration of training
    and of proposal (a proposal made in iteration i is stored with iteration i + 1)."""
    by_job = {}
    for e in state.evaluations(status=None):
        for prov in (e.get("provenance") or {}).values():
            if prov and prov.get("slurm_job_id"):
                by_job[str(prov["slurm_job_id"])] = prov.get("wall_time_s") or 0.0
    train = {m["iteration"]: m.get("seconds") or 0.0 for m in state.db.models.find({"campaign": state.name})}
    propose: dict[int, float] = {}
    for p in state.proposals():
        if p["iteration"] > 0:
            propose[p["iteration"] - 1] = p.get("seconds") or 0.0
    return by_job, train, propose


def _side(rec) -> dict:
    """The job-side record (``FW_slurm.json``) of a launch, {} when there is none."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads((Path(rec.launch_dir) / "FW_slurm.json").read_text())
    return {}


def job_breakdown(state, summary, lp) -> list[dict]:
    """One row per completed launch: kind, iteration, and its turnaround split into parts (seconds).

    Parts the code under test does not record (older revisions) are None; ``startup_s`` (process start →
    Firework start) and ``readback_s`` (Firework end → read back) are there for every revision.
    """
    by_job, train, propose = _work(state)
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
        side = _side(rec)
        submitted, started, fw_start, fw_end, back = map(
            _t, (rec.submitted, rec.process_start, rec.start, rec.end, rec.recovered)
        )
        if submitted is None or started is None or fw_start is None or fw_end is None or back is None:
            continue
        script, rocket = _t(side.get("script_start")), _t(side.get("rocket_start"))
        seen = _t(getattr(rec, "seen", None))
        work = work or 0.0
        rows.append(
            {
                "fw_id": rec.fw_id,
                "kind": kind,
                "iteration": it,
                "chained": bool(getattr(rec, "chained", False)),
                "slurm_job_id": rec.slurm_job_id,
                "submit_s": getattr(rec, "submit_s", None),
                "queue_s": (script or started) - submitted,
                "script_s": started - script if script else None,
                "imports_s": rocket - started if rocket else None,
                "load_s": fw_start - rocket if rocket else None,
                "startup_s": fw_start - started,
                "firework_other_s": (fw_end - fw_start) - work,
                "work_s": work,
                "seen_s": seen - fw_end if seen else None,
                "recover_s": getattr(rec, "recover_s", None),
                "readback_s": back - fw_end,
                "turnaround_s": back - submitted,
                "submitted": submitted,
                "recovered": back,
            }
        )
    return rows


def _chain_parts(job: dict, gap: float, queue: float) -> dict[str, float]:
    """One critical-path job's overhead by part; ``gap``: the controller's time before it was submitted."""
    out = {"controller_s": gap, "queue_s": queue, "firework_other_s": job["firework_other_s"]}
    if job["imports_s"] is not None:
        out.update(script_s=job["script_s"] or 0.0, imports_s=job["imports_s"], load_s=job["load_s"])
    else:  # older code: process start → Firework start in one piece
        out.update(script_s=0.0, imports_s=0.0, load_s=job["startup_s"])
    if job["seen_s"] is not None and job["recover_s"] is not None:
        out.update(seen_s=job["seen_s"], recover_s=job["readback_s"] - job["seen_s"])
    else:
        out.update(seen_s=job["readback_s"], recover_s=0.0)
    return out


def per_iteration(rows: list[dict]) -> list[dict]:
    """Each iteration's critical path — evaluations READY → the last evaluation → training → proposal read
    back — with its overhead split into :data:`PARTS`."""
    out = []
    ready_at = {0: next((r["recovered"] for r in rows if r["kind"] == "start"), None)}
    for r in rows:
        if r["kind"] == "propose":
            ready_at[r["iteration"] + 1] = r["recovered"]
    for it in sorted({r["iteration"] for r in rows if r["kind"] == "propose"}):
        evals = [r for r in rows if r["kind"] == "evaluate" and r["iteration"] == it]
        train = [r for r in rows if r["kind"] == "train" and r["iteration"] == it]
        prop = [r for r in rows if r["kind"] == "propose" and r["iteration"] == it]
        if not evals or not train or not prop or ready_at.get(it) is None:
            continue
        last, tr, pr = max(evals, key=lambda r: r["recovered"]), train[0], prop[0]
        t0 = ready_at[it]
        core_wait = last["queue_s"] - min(r["queue_s"] for r in evals)  # testbed: q jobs on 2 cores
        wall = pr["recovered"] - t0
        work = last["work_s"] + tr["work_s"] + pr["work_s"]
        chain = [
            _chain_parts(last, last["submitted"] - t0, last["queue_s"] - core_wait),
            _chain_parts(tr, tr["submitted"] - last["recovered"], tr["queue_s"]),
            _chain_parts(pr, pr["submitted"] - tr["recovered"], pr["queue_s"]),
        ]
        parts = {k: sum(c[k] for c in chain) for k in PARTS}
        out.append(
            {
                "iteration": it,
                "q": len(evals),
                "wall_s": wall,
                "work_critical_path_s": work,
                "core_wait_s": core_wait,
                "overhead_testbed_s": wall - work,
                "overhead_critical_path_s": wall - work - core_wait,
                "parts_s": parts,
                "by_job_s": {
                    k: sum(c.values()) for k, c in zip(("evaluate", "train", "propose"), chain, strict=True)
                },
                "propose_chained": pr["chained"],
            }
        )
    return out


def campaign_part(folder: Path, uri: str, iterations: int, q: int, env: dict) -> dict:
    """Part 1 and 2 with the code on the path: the campaign, its breakdown, the evaluation job's imports."""
    from aso_workflows.cluster.launchpad import load_launchpad

    campaign, state, summary = run_campaign(folder, uri, iterations, q)
    print(json.dumps(campaign), flush=True)
    ref = (state.doc.get("executor") or {}).get("launchpad") or {}
    lp = load_launchpad(uri, database=ref.get("database"))
    jobs = job_breakdown(state, summary, lp)
    iterations_ = per_iteration(jobs)
    imports = job_imports(summary, env)
    startup = [r["startup_s"] for r in jobs if r["kind"] == "evaluate" and not r["chained"]]
    return {
        "campaign": campaign,
        "jobs": jobs,
        "iterations": iterations_,
        "evaluation_job": imports,
        "summary": {
            "overhead_per_iteration_critical_path_s": _median(
                [r["overhead_critical_path_s"] for r in iterations_]
            ),
            "overhead_per_iteration_testbed_s": _median([r["overhead_testbed_s"] for r in iterations_]),
            "parts_median_s": {k: _median([r["parts_s"][k] for r in iterations_]) for k in PARTS},
            "evaluation_job_startup_median_s": _median(startup),
            "evaluation_job_queue_median_s": _median(
                [r["queue_s"] for r in jobs if r["kind"] == "evaluate" and not r["chained"]]
            ),
            "evaluation_job_imports_s": imports["imports_s"],
            "evaluation_job_imports_torch": imports["torch_imported"],
            "propose_chained_to_training": all(r["propose_chained"] for r in iterations_)
            if iterations_
            else None,
        },
        "load_average": Path("/proc/loadavg").read_text().split()[:3],
        "launchpad_database": ref.get("database"),
        "campaign_name": state.name,
    }


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

    variants = list(result["variants"])
    fig, axes = plt.subplots(1, 4 if result.get("pages") else 3, figsize=(20, 4.8))
    ax = axes[0]  # critical path per iteration by part, median over iterations
    bottom = [0.0] * len(variants)
    for i, part in enumerate(PARTS):
        vals = [result["variants"][v]["summary"]["parts_median_s"][part] or 0.0 for v in variants]
        ax.bar(variants, vals, bottom=bottom, label=part.removesuffix("_s").replace("_", " "), color=f"C{i}")
        bottom = [b + x for b, x in zip(bottom, vals, strict=True)]
    ax.axhline(TARGET_ITERATION_S, color="k", ls="--", lw=1, label=f"target {TARGET_ITERATION_S:g} s")
    ax.set_ylabel("seconds per iteration (median)")
    ax.set_title("overhead on the critical path, by part")
    ax.legend(fontsize=7)
    ax = axes[1]  # overhead per iteration
    w = 0.8 / max(len(variants), 1)
    for k, v in enumerate(variants):
        its = result["variants"][v]["iterations"]
        xs = [r["iteration"] + (k - (len(variants) - 1) / 2) * w for r in its]
        ax.bar(xs, [r["overhead_critical_path_s"] for r in its], w, label=v, color=f"C{k}")
    ax.axhline(TARGET_ITERATION_S, color="k", ls="--", lw=1, label=f"target {TARGET_ITERATION_S:g} s")
    ax.set_xlabel("iteration")
    ax.set_ylabel("overhead per iteration, critical path (s)")
    ax.set_title(f"q = {result['q']}: wall − work − core wait")
    ax.legend(fontsize=8)
    ax = axes[2]  # evaluation-job start-up
    data = [
        [
            r["startup_s"]
            for r in result["variants"][v]["jobs"]
            if r["kind"] == "evaluate" and not r["chained"]
        ]
        for v in variants
    ]
    ax.boxplot(data, tick_labels=variants)
    ax.axhline(TARGET_STARTUP_S, color="k", ls="--", lw=1, label=f"target {TARGET_STARTUP_S:g} s")
    ax.set_ylabel("seconds: process start → Firework start")
    ax.set_title("evaluation job start-up")
    ax.legend(fontsize=8)
    if result.get("pages"):
        ax = axes[3]
        labels = list(result["pages"])
        ax.barh(labels, [result["pages"][k]["median_s"] for k in labels], color="C2", label="median of 5")
        ax.plot([result["pages"][k]["first_s"] for k in labels], labels, "k|", ms=14, label="first load")
        ax.set_xlabel("seconds")
        ax.set_title(f"web GUI, {result['fireworks_in_launchpad']} Fireworks")
        ax.legend(fontsize=8)
    fig.suptitle(f"load average {' '.join(result['load_average_start'])} at the start", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@contextlib.contextmanager
def revision_tree(rev: str):
    """A detached git worktree of ``rev`` (removed afterwards)."""
    tmp = Path(tempfile.mkdtemp(prefix="aso-orch-rev-"))
    tree = tmp / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True
        )
        shutil.rmtree(tmp, ignore_errors=True)


def run_variant(label: str, tree: Path, uri: str, args: argparse.Namespace, env: dict) -> dict:
    """Part 1 and 2 in a child process whose ``aso_workflows`` (and its Slurm jobs') comes from ``tree``."""
    out = args.out / f"part-{label}.json"
    child_env = {**env, "PYTHONPATH": os.pathsep.join([str(tree), env.get("PYTHONPATH", "")])}
    argv = [sys.executable, __file__, "--campaign-only", str(out), "--mongodb-uri", uri]
    argv += ["--iterations", str(args.iterations), "--q", str(args.q)]
    print(f"== {label}: aso_workflows from {tree}", flush=True)
    subprocess.run(argv, env=child_env, check=True, cwd=tree)
    part = json.loads(out.read_text())
    out.unlink()
    return part


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--q", type=int, default=5, help="candidates per iteration (and initial structures)")
    ap.add_argument(
        "--fireworks", type=int, default=1000, help="Fireworks in the LaunchPad for the page times (0: skip)"
    )
    ap.add_argument("--baseline", help="git revision to measure first, in the same run (e.g. dd98690)")
    ap.add_argument("--mongodb-uri", default=os.environ.get("ASO_TEST_MONGODB_URI"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "orchestration")
    ap.add_argument("--campaign-only", type=Path, help=argparse.SUPPRESS)  # the child of run_variant
    args = ap.parse_args()
    if args.campaign_only:
        with tempfile.TemporaryDirectory(prefix="aso-orch-") as tmp:
            part = campaign_part(Path(tmp), args.mongodb_uri, args.iterations, args.q, dict(os.environ))
        args.campaign_only.write_text(json.dumps(part))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    from aso_workflows.testing.slurm_testbed import SlurmTestbed, testbed_unavailable_reason

    reason = testbed_unavailable_reason()
    if reason:
        raise SystemExit(f"the Slurm testbed cannot start: {reason}")
    load_start = Path("/proc/loadavg").read_text().split()[:3]
    variants: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="aso-orch-") as tmp, SlurmTestbed() as bed:
        folder = Path(tmp)
        with mongodb(args.mongodb_uri, folder) as (uri, server), contextlib.ExitStack() as stack:
            print(
                f"server: {server}; Slurm testbed: {bed.conf}; load average {' '.join(load_start)}",
                flush=True,
            )
            trees = {}
            if args.baseline:
                trees[f"baseline {args.baseline}"] = stack.enter_context(revision_tree(args.baseline))
            trees["this checkout"] = ROOT
            for label, tree in trees.items():
                variants[label] = run_variant(label, tree, uri, args, bed.env)
                print(json.dumps({label: variants[label]["summary"]}, indent=1), flush=True)
            floor = python_floor(bed.env)
            pages, n_fireworks, added = {}, 0, 0
            if args.fireworks > 0:
                from aso_workflows.cluster.launchpad import load_launchpad

                mine = variants["this checkout"]
                lp = load_launchpad(uri, database=mine["launchpad_database"])
                added = fill_launchpad(lp, args.fireworks)
                n_fireworks = lp.fireworks.count_documents({})
                pages = page_times(lp, mine["campaign_name"])
    result = {
        "server": server,
        "q": args.q,
        "iterations_requested": args.iterations,
        "load_average_start": load_start,
        "load_average_end": Path("/proc/loadavg").read_text().split()[:3],
        "target_overhead_per_iteration_s": TARGET_ITERATION_S,
        "target_evaluation_startup_s": TARGET_STARTUP_S,
        "variants": variants,
        "import_floor_s": floor,
        "fireworks_in_launchpad": n_fireworks,
        "synthetic_fireworks_added": added,
        "pages": pages,
    }
    if args.baseline:
        before, after = (variants[k]["summary"] for k in trees)
        result["ratio_before_after"] = {
            k: before[k] / after[k]
            for k in ("overhead_per_iteration_critical_path_s", "overhead_per_iteration_testbed_s")
            if before.get(k) and after.get(k)
        }
    (args.out / "orchestration.json").write_text(json.dumps(result, indent=1))
    plot(result, args.out / "orchestration.png")
    print(json.dumps({k: v["summary"] for k, v in variants.items()}, indent=1))
    print(json.dumps(result.get("ratio_before_after", {})))
    print(f"wrote {args.out / 'orchestration.json'} and orchestration.png")


if __name__ == "__main__":
    main()
