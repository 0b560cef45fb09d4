"""Controller crash: the process driving a campaign is SIGKILLed at several points, then ``aso resume``
continues it from the store, locally and on the Slurm path; nothing is lost, duplicated or simulated twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from campaign_files import SELF_TARGET, campaign_yaml
from fault_ledger import store_check

from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.config import load_config

DATA = Path(__file__).parents[1] / "aso_workflows" / "data"
REPO = Path(__file__).parents[1]
TINY_SURROGATE = {"n_models": 2, "hidden": 16, "n_layers": 2, "n_rbf": 16, "epochs": 40, "patience": 40}
ASO = [str(Path(sys.executable).parent / "aso")]  # the console script (python -m cli misses plug-in commands)


def campaign_file(tmp_path: Path, name: str, **fields) -> Path:
    defaults = {"budget": 9, "initial_size": 4, "seed": 2, "surrogate": TINY_SURROGATE}
    defaults["proposal"] = {"n_starts": 8, "steps": 10, "progress": False}
    return campaign_yaml(tmp_path, name, pair=SELF_TARGET, **{**defaults, **fields})


def kill_when(
    argv: list[str], condition: Callable[[], bool], env: dict | None = None, timeout: float = 300
) -> str:
    """Start ``argv``, SIGKILL it as soon as ``condition()`` holds; returns its stderr tail.

    Fails if the process ends by itself first (the kill point was never reached).
    """
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"{argv[1]} ended before the kill point: " + proc.stderr.read().decode()[-1500:])
            if condition():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"kill point not reached within {timeout} s")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.stderr.read().decode()[-2000:]


def counts(db, name: str, iteration: int) -> tuple[int, int, int]:
    """(proposals, evaluations, models) of one iteration."""
    return (
        db.proposals.count_documents({"campaign": name, "iteration": iteration}),
        db.evaluations.count_documents({"campaign": name, "iteration": iteration}),
        db.models.count_documents({"campaign": name, "iteration": iteration, "status": "completed"}),
    )


KILL_AT = """
import os, signal, sys

from aso_workflows.campaign import evaluate, learn

where, when, count = sys.argv[1].split(":")
module = {"evaluate": evaluate, "learn": learn}[where.split(".")[0]]
name = where.split(".")[1]
original, calls = getattr(module, name), [0]


def wrapped(*args, **kwargs):
    calls[0] += 1
    if when == "before" and calls[0] >= int(count):
        os.kill(os.getpid(), signal.SIGKILL)
    out = original(*args, **kwargs)
    if when == "after" and calls[0] >= int(count):
        os.kill(os.getpid(), signal.SIGKILL)
    return out


setattr(module, name, wrapped)
sys.argv = ["aso", *sys.argv[2:]]
from aso_workflows.cli import app

app()
"""
"""``python -c KILL_AT module.function:before|after:N aso-arguments...``: the real ``aso`` command, SIGKILLed
by itself when ``function`` is called the N-th time (before it runs or right after it returns): a kill
point that does not depend on timing."""


def killed_at(point: str, *aso_args: str) -> None:
    """Run ``aso *aso_args`` until it SIGKILLs itself at ``point``; fails if it ended otherwise."""
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AT, point, *aso_args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL, f"not killed at {point}: {proc.stderr[-1500:]}"


def test_aso_run_killed_anywhere_resumes_to_the_budget(tmp_path, fault_ledger):
    path = campaign_file(tmp_path, "crash")
    cfg = load_config(path)
    db = get_db(cfg.store_spec())
    resume = ["resume", "crash", "--store", str(cfg.store_spec().path), "--quiet"]
    name = "crash"

    # 1. during the evaluation of the initial structures: right after the second of 5 was recorded
    killed_at("evaluate.record_evaluation:after:2", "run", str(path), "--quiet")
    assert counts(db, name, 0) == (5, 2, 0)
    fault_ledger.inject("controller_sigkill", "during evaluation (2 of 5 evaluated)")

    # 2. as training starts (all of iteration 0 evaluated, no model yet), by a resume
    killed_at("learn.train_models:before:1", *resume)
    assert counts(db, name, 0) == (5, 5, 0) and counts(db, name, 1)[0] == 0
    fault_ledger.inject("controller_sigkill", "during training")

    # 3. right after a propose: iteration 1 stored, nothing of it evaluated
    killed_at("learn.propose_candidates:after:1", *resume)
    assert counts(db, name, 0)[2] == 1 and counts(db, name, 1)[:2] == (2, 0)
    fault_ledger.inject("controller_sigkill", "right after propose (2 of 2 stored, 0 evaluated)")

    done = subprocess.run([*ASO, *resume], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    state = CampaignState.load(get_db(cfg.store_spec()), name)
    assert state.doc["status"] == "completed" and state.n_used() == cfg.budget
    assert state.db.spectra.count_documents({}) == cfg.budget  # nothing simulated twice
    assert [len(state.proposals(i)) for i in range(3)] == [5, 2, 2]
    iterations = sorted(m["iteration"] for m in state.db.models.find({"campaign": name}))
    assert iterations == sorted(set(iterations)) and iterations[0] == 0  # one model set per iteration
    assert store_check(state) == (0, 0, True)
    for stage in ("during evaluation", "during training", "right after propose"):
        fault_ledger.verify_campaign("controller_sigkill", state, detail=f"{stage}: resumed to the budget")

    # a finished campaign resumes to nothing
    again = subprocess.run([*ASO, *resume], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already ended" in again.stdout
    assert CampaignState.load(get_db(cfg.store_spec()), name).n_used() == cfg.budget


def test_resume_of_an_unknown_campaign_is_one_line(tmp_path):
    (tmp_path / "store").mkdir()
    out = subprocess.run(
        [*ASO, "resume", "nope", "--store", str(tmp_path / "store")], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "no campaign named 'nope'" in out.stderr


CONTROLLER = """
import sys
from aso_workflows.cluster.runner import ClusterCampaignRunner
from aso_workflows.jobstore import shared_job_store
from aso_workflows.testing.launchpad import mongomock_launchpad
from aso_workflows.cluster.queues import slurm_queue
from aso_workflows.config import load_config

common = {"walltime": "00:05:00", "nodes": 1, "ntasks": 1, "cpus_per_task": 1}
queues = {
    "default": slurm_queue("cpu", partition="cpu", **common),
    "gpu": slurm_queue("gpu", partition="gpu", gres="gpu:1", **common),
}
runner = ClusterCampaignRunner(
    launchpad=mongomock_launchpad(), launch_dir=sys.argv[2], queues=queues,
    job_store=shared_job_store(sys.argv[3]), poll_interval=0.5, lost_after=2.0,
)
runner.run(load_config(sys.argv[1]))
"""


@pytest.mark.slurm
@pytest.mark.mongodb
def test_cluster_controller_killed_resumes_from_the_store(slurm_testbed, tmp_path, fault_ledger, request):
    """The offline controller (LaunchPad in its memory) is killed twice; ``aso resume`` rebuilds from the store.

    The LaunchPad died with the first controller, so nothing was recorded to reopen: the resume is given
    an empty LaunchPad database on the tier's MongoDB (``--launchpad``) and rebuilds the latest iteration
    from the campaign store (reattaching to a surviving workflow: ``tests/test_story_mongodb.py``).
    """
    from test_faults_cluster import running_jobs

    launchpad = request.getfixturevalue("mongodb_uri")
    fresh = request.getfixturevalue("fresh_databases")("aso_test_lp")
    launchpad = _with_database(launchpad, fresh)

    name = "slurm-crash"
    path = campaign_file(tmp_path, name, optimizer="random", budget=6, initial_size=3)
    cfg = load_config(path)
    db = get_db(cfg.store_spec())
    launch_dir = (tmp_path / "launches").resolve()
    env = slurm_testbed.env
    controller = [sys.executable, "-c", CONTROLLER, str(path), str(launch_dir), str(tmp_path / "jobstore")]
    resume = [*ASO, "resume", name, "--store", str(cfg.store_spec().path), "--lost-after", "2", "-q"]
    resume += ["--launchpad", launchpad]

    # 1. while iteration 0 is being evaluated, with Slurm jobs in flight
    kill_when(controller, lambda: counts(db, name, 0)[1] >= 1 and bool(running_jobs(env, launch_dir)), env)
    orphans = set(running_jobs(env, launch_dir))
    assert counts(db, name, 0)[1] < 4 and orphans
    fault_ledger.inject(
        "cluster_controller_sigkill", f"during evaluation, {len(orphans)} Slurm jobs orphaned"
    )

    # 2. the resumed controller, right after it proposed iteration 1
    kill_when(resume, lambda: counts(db, name, 1)[0] > 0, env)
    fault_ledger.inject("cluster_controller_sigkill", "aso resume killed right after propose")
    jobcomp = {r.job_id: r.state for r in slurm_testbed.jobcomp_records()}
    # the first controller's jobs were cancelled by the resume, or had ended by then
    assert all(jobcomp.get(j) in ("CANCELLED", "COMPLETED") for j in orphans), {
        j: jobcomp.get(j) for j in orphans
    }

    done = subprocess.run(resume, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "workflow COMPLETED" in done.stdout
    state = CampaignState.load(get_db(cfg.store_spec()), name)
    assert state.doc["status"] == "completed" and state.n_used() == cfg.budget
    assert state.doc["executor"]["kind"] == "slurm"
    assert state.db.spectra.count_documents({}) == cfg.budget
    assert store_check(state) == (0, 0, True)
    assert not running_jobs(env, launch_dir)  # nothing left behind on the cluster
    for stage in ("controller killed during evaluation", "resume killed after propose"):
        fault_ledger.verify_campaign("cluster_controller_sigkill", state, detail=stage)


def _with_database(uri: str, database: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(uri)._replace(path=f"/{database}").geturl()


def test_resume_without_a_recorded_launchpad_says_so_in_one_line(tmp_path):
    """A Slurm campaign whose LaunchPad nothing can reopen (in-process): aso resume asks for --launchpad."""
    from aso_workflows.campaign.state import get_db

    path = campaign_file(tmp_path, "nolp", optimizer="random", budget=5, initial_size=3)
    cfg = load_config(path)
    out = subprocess.run([*ASO, "run", str(path), "-q"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    db = get_db(cfg.store_spec())
    db.campaigns.update_one(  # as an `aso submit` on an in-process LaunchPad records it
        {"_id": "nolp"},
        {
            "$set": {
                "status": "running",
                "executor": {
                    "kind": "slurm",
                    "launchpad": None,
                    "queues": {
                        "default": str(REPO / "launchpad" / "my_qadapter_cpu.yaml"),
                        "gpu": str(REPO / "launchpad" / "my_qadapter_gpu.yaml"),
                    },
                },
            }
        },
    )
    done = subprocess.run(
        [*ASO, "resume", "nolp", "--store", str(cfg.store_spec().path), "--budget", "7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert "--launchpad" in lines[0] and "no LaunchPad is recorded for campaign 'nolp'" in lines[0]


def test_batch_cut_short_by_a_crash_is_completed_on_resume(tmp_path, fault_ledger):
    """The propose job died after storing 1 of q=2 candidates: rebuilding the campaign fills in the other,
    keeps the stored one, and marks the batch complete (seen in CI when a kill landed mid-batch)."""
    from aso_workflows.campaign import learn
    from aso_workflows.campaign.local import LocalCampaignRunner

    cfg = load_config(campaign_file(tmp_path, "cut", optimizer="random", budget=7))
    LocalCampaignRunner(progress=False).run(cfg)
    db = get_db(cfg.store_spec())
    state = CampaignState.load(db, "cut")
    assert [len(state.proposals(i)) for i in range(2)] == [5, 2]
    # rewind to "the propose job of iteration 0 stored candidate 0 of iteration 1 and was killed"
    db.evaluations.delete_many({"campaign": "cut", "iteration": 1})
    db.proposals.delete_one({"_id": f"cut:{1:04d}:{1:03d}"})
    db.campaigns.update_one({"_id": "cut"}, {"$set": {"iteration": 0, "status": "running"}})
    kept_doc = db.proposals.find_one({"_id": f"cut:{1:04d}:{0:03d}"})
    assert kept_doc is not None
    kept = kept_doc["fingerprint"]
    fault_ledger.inject("propose_killed_mid_batch", "1 of 2 candidates stored")

    learn.resume_point(CampaignState.load(db, "cut"))  # what the start job does on a resume
    state = CampaignState.load(db, "cut")
    props = state.proposals(1)
    assert len(props) == 2 and props[0]["fingerprint"] == kept
    assert props[1]["fingerprint"] != kept and state.doc["iteration"] == 1
    assert learn.propose_candidates(state, 1, {}) == [p["_id"] for p in props]  # now idempotent
    fault_ledger.verify(
        "propose_killed_mid_batch",
        len(props) == 2 and props[0]["fingerprint"] == kept,
        "stored candidate kept",
    )
