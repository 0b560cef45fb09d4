"""``aso status`` tells a live campaign from a dead one: the controller's lease (held, by whom, since when,
gone) and what to run to continue; on Slurm, jobs that wait or cannot start, with Slurm's reason.

The controllers here are real processes killed by PID (SIGKILL: no clean-up runs), and the Slurm job that
cannot start is a real one on the testbed (a GPU queue asking for more CPUs than the node has).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from campaign_files import campaign_yaml

from aso_workflows.config import load_config
from aso_workflows.store import lease_state

ASO = [str(Path(sys.executable).parent / "aso")]


def _status(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ASO, "status", *args], capture_output=True, text=True, timeout=120, env=env)


def _wait_for(condition, timeout: float = 300, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(0.2)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lease_state_tells_a_live_controller_from_a_dead_one():
    import socket

    host, now = socket.gethostname(), time.time()
    assert not lease_state(None).live and "no controller" in lease_state(None).reason
    mine = {
        "holder": f"{host}:{os.getpid()}:abc",
        "acquired": now - 50,
        "renewed": now - 2,
        "expires": now + 28,
    }
    live = lease_state(mine, now)
    assert live.live and live.pid == os.getpid() and live.host == host and live.alive is True
    gone = lease_state({**mine, "holder": f"{host}:{_dead_pid()}:abc"}, now)
    assert not gone.live and gone.alive is False and "is gone" in gone.reason
    expired = lease_state({**mine, "expires": now - 1}, now)
    assert not expired.live and "stopped renewing" in expired.reason
    # another host: the process cannot be checked, the expiry decides
    other = lease_state({**mine, "holder": "elsewhere:1:abc"}, now)
    assert other.live and other.alive is None


STOP_AFTER_FIRST_EVALUATION = """
import os, signal, sys

from aso_workflows.campaign import evaluate

original = evaluate.record_evaluation


def wrapped(*args, **kwargs):
    out = original(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGSTOP)  # held still: alive, its lease unexpired
    return out


evaluate.record_evaluation = wrapped
sys.argv = ["aso", *sys.argv[1:]]
from aso_workflows.cli import app

app()
"""
"""The real ``aso`` command, stopped (SIGSTOP) by itself right after it recorded its first evaluation."""


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_killed_local_controller_is_not_running_and_says_how_to_continue(tmp_path):
    path = campaign_yaml(tmp_path, "killed", optimizer="random", budget=5, initial_size=3)
    cfg = load_config(path)
    argv = [sys.executable, "-c", STOP_AFTER_FIRST_EVALUATION, "run", str(path), "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr
    assert stderr is not None
    try:

        def stopped() -> bool:
            if proc.poll() is not None:
                pytest.fail("aso run ended before it was killed: " + stderr.read().decode()[-1500:])
            return _stopped(proc.pid)

        _wait_for(stopped, what="a first evaluation")
        live = json.loads(_status(str(path), "--json").stdout)
        assert live["status"] == "running" and live["controller"]["running"] is True
        assert live["controller"]["pid"] == proc.pid and live["controller"]["resume"] is None
        assert "running: pid" in _status(str(path)).stdout
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    t0 = time.time()
    dead = json.loads(_status(str(path), "--json").stdout)
    assert time.time() - t0 < 30  # at once, not after the lease's 30 s
    assert dead["stored_status"] == "running" and dead["status"] == "interrupted"
    c = dead["controller"]
    assert c["running"] is False and c["pid"] == proc.pid and "is gone" in c["reason"]
    assert c["resume"] == f"aso resume {path}"
    text = _status(str(path)).stdout
    assert "interrupted" in text and "not running" in text and f"aso resume {path}" in " ".join(text.split())
    listed = json.loads(_status("--store", str(cfg.store_spec().path), "--json").stdout)
    assert [(r["name"], r["status"], r["controller"]) for r in listed] == [("killed", "interrupted", False)]

    from aso_workflows.results import Campaign

    api = Campaign.open("killed", cfg.store_spec()).summary()
    assert api.status == "interrupted" and api.controller["resume"].startswith("aso resume killed --store ")

    # the command status gave continues the campaign to its end
    done = subprocess.run([*shlex.split(c["resume"]), "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    after = json.loads(_status(str(path), "--json").stdout)
    assert after["status"] == "completed" and after["n_used"] == cfg.budget
    assert after["controller"]["running"] is False and after["controller"]["resume"] is None


CONTROLLER = """
import sys
from aso_workflows.cluster.runner import ClusterCampaignRunner
from aso_workflows.jobstore import shared_job_store
from aso_workflows.testing.launchpad import mongomock_launchpad
from aso_workflows.cluster.queues import slurm_queue
from aso_workflows.config import load_config

common = {"walltime": "00:05:00", "nodes": 1, "ntasks": 1}
queues = {
    "default": slurm_queue("cpu", partition="cpu", cpus_per_task=1, **common),
    # what a new user gets from the shipped GPU queue file on a small node: more CPUs than it has
    "gpu": slurm_queue("gpu", partition="gpu", gres="gpu:1", cpus_per_task=int(sys.argv[4]), **common),
}
runner = ClusterCampaignRunner(
    launchpad=mongomock_launchpad(), launch_dir=sys.argv[2], queues=queues,
    job_store=shared_job_store(sys.argv[3]), lost_after=2.0,
)
runner.run(load_config(sys.argv[1]))
"""


@pytest.mark.slurm
def test_a_slurm_job_that_cannot_start_is_named_with_its_reason(slurm_testbed, tmp_path):
    from aso_workflows.cluster.queues import queue_misfits, slurm_queue
    from aso_workflows.cluster.slurm import jobs_in

    env = slurm_testbed.env
    too_many = (os.cpu_count() or 1) + 2
    bad = slurm_queue("gpu", partition="gpu", gres="gpu:1", cpus_per_task=too_many, walltime="00:05:00")
    # what aso submit warns about before it submits anything
    assert any("CPUs per node" in line for line in queue_misfits(bad, env))
    assert queue_misfits(slurm_queue("gpu", partition="gpu", gres="gpu:1", cpus_per_task=1), env) == []
    assert "does not exist" in queue_misfits(slurm_queue("cpu", partition="nosuch"), env)[0]

    path = campaign_yaml(tmp_path, "blocked", optimizer="random", budget=4, initial_size=2)
    launch_dir = (tmp_path / "launches").resolve()
    argv = [sys.executable, "-c", CONTROLLER, str(path), str(launch_dir), str(tmp_path / "js"), str(too_many)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stderr = proc.stderr
    assert stderr is not None
    try:

        def gpu_job_waits() -> bool:
            if proc.poll() is not None:
                pytest.fail("the controller ended: " + stderr.read().decode()[-1500:])
            # the training's job can be submitted while the evaluations still run (a standby job):
            # wait until they have left the queue and only it remains
            jobs = jobs_in(launch_dir, env) or []
            return bool(jobs) and all(j["partition"] == "gpu" and j["reason"] for j in jobs)

        _wait_for(gpu_job_waits, what="the training job pending on the gpu partition, alone")
        time.sleep(1.5)  # a few rounds of the controller with the job pending
        doc = json.loads(_status(str(path), "--json", env=env).stdout)
        job = next(j for j in doc["slurm_jobs"] if j["partition"] == "gpu")
        assert job["state"] == "PENDING" and job["reason"] == "PartitionConfig" and job["blocked"] is True
        # the job started in advance for the training (a standby job), or the training's own
        assert job["firework"].startswith("blocked / it 0 / train") and "never start" in job["hint"]
        assert doc["status"] == "running" and doc["controller"]["pid"] == proc.pid
        text = " ".join(_status(str(path), env=env).stdout.split())
        assert f"Slurm job {job['job_id']} cannot start" in text and "PartitionConfig" in text

        os.kill(proc.pid, signal.SIGKILL)  # the controller goes; its job stays in the queue
        proc.wait()
        doc = json.loads(_status(str(path), "--json", env=env).stdout)
        assert doc["status"] == "interrupted" and doc["controller"]["resume"] == f"aso resume {path}"
        # the jobs it left in the queue are still named: the training's (or its standby job, or both:
        # the controller may have submitted the other one before it was killed), none can start
        left = doc["slurm_jobs"]
        assert job["job_id"] in [j["job_id"] for j in left] and len(left) <= 2, left
        assert all(j["partition"] == "gpu" and j["reason"] == "PartitionConfig" for j in left), left
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        ids = [j["job_id"] for j in jobs_in(launch_dir, env) or []]
        if ids:
            subprocess.run(["scancel", *ids], env=env, capture_output=True, timeout=60)


def test_slurm_sizes_and_reasons_read_as_slurm_writes_them():
    from aso_workflows.cluster.queues import _gpus, _megabytes, _minutes
    from aso_workflows.cluster.slurm import reason_hint

    assert [_minutes(t) for t in ("30", "10:30", "02:00:00", "1-00:00:00", "2-12", "infinite")] == [
        30,
        10.5,
        120,
        1440,
        3600,
        None,
    ]
    assert [_megabytes(m) for m in ("16G", "2000M", "2000", "1T", "lots")] == [
        16384,
        2000,
        2000,
        1024**2,
        None,
    ]
    assert [_gpus(g) for g in ("gpu:1", "gpu:a100:4(S:0-1)", "gpu:2,shard:8", "(null)", "")] == [
        1,
        4,
        2,
        0,
        0,
    ]
    assert (
        "never start" in reason_hint("PartitionConfig")
        and reason_hint("Resources") == "waiting for free resources"
    )
    assert reason_hint("QOSMaxJobsPerUserLimit").startswith("held back") and reason_hint(None) == ""
