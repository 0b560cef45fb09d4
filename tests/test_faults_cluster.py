"""Fault injection on a real Slurm cluster: jobs killed mid-run (``scancel``, ``kill -9`` of the job's
process on the node) while the offline controller drives a campaign.

The controller must see each lost job (its Slurm job ended without a FireWorks result), rerun it, and the
campaign must end with every candidate evaluated exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from aso_workflows.campaign.cluster import ClusterCampaignRunner
from aso_workflows.cluster.jobstore import shared_job_store
from aso_workflows.cluster.launchpad import mongomock_launchpad
from aso_workflows.config import load_config

pytestmark = pytest.mark.slurm

DATA = Path(__file__).parents[1] / "aso_workflows" / "data"


def slurm_campaign(tmp_path: Path, name: str, **fields) -> Path:
    """A small PDF campaign (random proposals: no training cost) for Slurm fault tests."""
    doc = {
        "name": name,
        "start": str(DATA / "LiNiO2.cif"),
        "targets": [{"technique": "pdf", "structure": str(DATA / "LiNiO2.cif")}],
        "budget": 6,
        "initial_size": 3,
        "batch_size": 2,
        "optimizer": "random",
        "seed": 5,
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.2},
        "min_distances": {"Ni-O": 1.6, "Li-O": 1.6, "O-O": 2.0},
        "output": str(tmp_path / "out"),
    }
    doc.update(fields)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def running_jobs(env: dict, launch_dir: Path) -> dict[str, tuple[str, Path]]:
    """Slurm job id → (state, launch directory) of the jobs working in ``launch_dir``."""
    out = subprocess.run(
        ["squeue", "--me", "--noheader", "--format=%i|%T|%Z"], capture_output=True, text=True, env=env
    )
    jobs = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and Path(parts[2]).resolve().is_relative_to(launch_dir.resolve()):
            jobs[parts[0]] = (parts[1], Path(parts[2]))
    return jobs


def job_processes(launch: Path) -> list[int]:
    """PIDs of the job-side launcher (``rlaunch_shim``) working in ``launch`` (processes this test started)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if "rlaunch_shim" in cmd and cwd == launch:
            pids.append(int(proc.name))
    return pids


class JobKiller(threading.Thread):
    """Watches the campaign's Slurm jobs and kills the ones whose Firework name ends with a target.

    ``targets``: Firework name suffix → ``"scancel"`` or ``"kill9"``. A job is killed once its Firework
    has started inside the job (FW_offline.json has ``started_on``) and has no result yet.
    """

    def __init__(self, env: dict, launch_dir: Path, targets: dict[str, str]):
        super().__init__(daemon=True)
        self.env, self.launch_dir, self.targets = env, launch_dir, dict(targets)
        self.killed: dict[str, dict] = {}  # slurm job id → {"suffix", "how", "fw_name"}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.targets:
            for job_id, (state, launch) in running_jobs(self.env, self.launch_dir).items():
                if state != "RUNNING" or job_id in self.killed:
                    continue
                try:
                    name = json.loads((launch / "FW.json").read_text())["name"]
                    offline = json.loads((launch / "FW_offline.json").read_text())
                except (OSError, ValueError, KeyError):
                    continue
                suffix = next((s for s in self.targets if name.endswith(s)), None)
                if suffix is None or "started_on" not in offline or "fwaction" in offline:
                    continue
                how = self.targets.pop(suffix)
                if how == "scancel":
                    subprocess.run(["scancel", job_id], env=self.env, check=True)
                else:
                    pids = job_processes(launch)
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)
                    if not pids:  # not started yet: try again next round
                        self.targets[suffix] = how
                        continue
                self.killed[job_id] = {"suffix": suffix, "how": how, "fw_name": name}
            time.sleep(0.2)


def test_jobs_killed_mid_run_are_detected_rerun_and_not_duplicated(
    slurm_testbed, slurm_queues, tmp_path, fault_ledger
):
    from test_faults_simulation import store_check

    cfg = load_config(slurm_campaign(tmp_path, "lost-jobs"))
    launch_dir = tmp_path / "launches"
    runner = ClusterCampaignRunner(
        launchpad=mongomock_launchpad(),
        launch_dir=launch_dir,
        queues=slurm_queues,
        job_store=shared_job_store(tmp_path / "jobstore"),
        timeout=600,
        poll_interval=0.5,
        lost_after=2.0,
    )
    killer = JobKiller(
        slurm_testbed.env,
        launch_dir,
        {
            "it 0 / cand 1 / pdf": "scancel",  # an evaluation cancelled (preempted, node drained, scancel)
            "it 0 / cand 2 / pdf": "kill9",  # its process killed on the node (OOM killer, node crash)
            "it 0 / train": "scancel",  # the GPU job
            "it 1 / cand 0 / pdf": "kill9",
        },
    )
    killer.start()
    try:
        state, summary = runner.run(cfg, write_outputs=False)
    finally:
        killer.stop.set()
        killer.join(5)

    by_job = {r.slurm_job_id: r for r in summary.launches}
    assert len(killer.killed) >= 3, f"only {len(killer.killed)} jobs could be killed mid-run: {killer.killed}"
    for job_id, k in killer.killed.items():
        kind = f"slurm_job_{k['how']}"
        fault_ledger.inject(kind, f"{k['fw_name']} (Slurm job {job_id})")
        rec = by_job[job_id]
        assert rec.lost and rec.rerun and rec.state == "FIZZLED", rec.as_dict()
        assert "without a FireWorks result" in rec.error
        later = [r for r in summary.launches if r.fw_id == rec.fw_id and r.launch_id > rec.launch_id]
        assert later and later[-1].state == "COMPLETED", [r.as_dict() for r in later]
        fault_ledger.recovered(kind, f"fw {rec.fw_id} rerun as Slurm job {later[-1].slurm_job_id}")
    # nothing else was lost, and the campaign ended normally
    assert {r.slurm_job_id for r in summary.lost()} == set(killer.killed)
    assert summary.workflow_state == "COMPLETED", summary.as_dict()
    assert state.doc["status"] == "completed" and state.n_used() == cfg.budget
    assert not state.evaluations("failed")
    # each evaluation was written once, by a job that ran to the end (not by a killed one)
    for e in state.evaluations():
        job_id = e["provenance"]["pdf"]["slurm_job_id"]
        assert job_id not in killer.killed and by_job[job_id].state == "COMPLETED"
    lost, duplicated = store_check(state)
    fault_ledger.evaluations(lost=lost, duplicated=duplicated)
    assert (lost, duplicated) == (0, 0)
    # the LaunchPad keeps the Slurm side of every lost launch
    lost_docs = list(runner.launchpad.launches.find({"slurm.lost": True}))
    assert sorted(d["slurm"]["job_id"] for d in lost_docs) == sorted(killer.killed)


def test_a_job_lost_more_often_than_max_reruns_becomes_a_failed_candidate(
    slurm_testbed, slurm_queues, tmp_path, fault_ledger
):
    """max_reruns 0: the killed evaluation is not rerun; the campaign records it as lost_job and replaces it."""
    from test_faults_simulation import store_check

    cfg = load_config(slurm_campaign(tmp_path, "given-up", budget=5, initial_size=2))
    launch_dir = tmp_path / "launches"
    runner = ClusterCampaignRunner(
        launchpad=mongomock_launchpad(),
        launch_dir=launch_dir,
        queues=slurm_queues,
        job_store=shared_job_store(tmp_path / "jobstore"),
        timeout=600,
        poll_interval=0.5,
        lost_after=2.0,
        max_reruns=0,
    )
    killer = JobKiller(slurm_testbed.env, launch_dir, {"it 0 / cand 1 / pdf": "scancel"})
    killer.start()
    try:
        state, summary = runner.run(cfg, write_outputs=False)
    finally:
        killer.stop.set()
        killer.join(5)
    assert len(killer.killed) == 1
    fault_ledger.inject("slurm_job_lost_beyond_reruns", "it 0 / cand 1, max_reruns 0")
    failed = state.evaluations("failed")
    assert [(e["proposal_id"], e["failure_kind"]) for e in failed] == [("given-up:0000:001", "lost_job")]
    assert "did not complete" in failed[0]["error"]
    assert state.n_used() == cfg.budget and state.doc["status"] == "completed"
    assert len(state.proposals()) == cfg.budget + 1  # the lost candidate was replaced
    fault_ledger.recovered("slurm_job_lost_beyond_reruns", failed[0]["error"][:100])
    lost, duplicated = store_check(state)
    fault_ledger.evaluations(lost=lost, duplicated=duplicated)
    assert (lost, duplicated) == (0, 0)
