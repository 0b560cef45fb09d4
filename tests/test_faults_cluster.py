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
from campaign_files import SELF_TARGET, campaign_yaml
from fault_ledger import store_check

from aso_workflows.cluster.runner import ClusterCampaignRunner
from aso_workflows.config import load_config
from aso_workflows.jobstore import shared_job_store
from aso_workflows.testing.launchpad import mongomock_launchpad

pytestmark = pytest.mark.slurm

DATA = Path(__file__).parents[1] / "aso_workflows" / "data"


def slurm_campaign(tmp_path: Path, name: str, **fields) -> Path:
    """A small PDF campaign (random proposals: no training cost) for Slurm fault tests."""
    return campaign_yaml(tmp_path, name, pair=SELF_TARGET, **{"optimizer": "random", "seed": 5, **fields})


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


def current_launch(home: Path) -> Path:
    """The launch directory a Slurm job works in now: the last one the controller handed over to it
    (``FW_next.<n>.json`` in its first one, ``cluster/handover.py``), else its first one."""
    handed = sorted(home.glob("FW_next.*.json"), key=lambda p: int(p.name.split(".")[1]))
    for path in reversed(handed):
        try:
            message = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if message.get("launch_dir"):
            return Path(message["launch_dir"])
    return home


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

    ``targets``: ``(name suffix, "scancel" | "kill9")`` pairs, used in order; a suffix listed twice kills
    the Firework's rerun too. A job is killed while Slurm runs it and before it has a result (for
    ``kill9``: once its launcher process exists). On an idle machine a PDF job spends ~1.5 s starting
    Python and ~0.1 s in the Firework, so most kills land during start-up, some after the evaluation
    was written (the rerun must then write nothing).
    """

    def __init__(self, env: dict, launch_dir: Path, targets: list[tuple[str, str]]):
        super().__init__(daemon=True)
        self.env, self.launch_dir, self.targets = env, launch_dir, list(targets)
        self.killed: dict[str, dict] = {}  # slurm job id → {"suffix", "how", "fw_name"}
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.targets:
            try:
                self._round()
            except Exception as exc:  # noqa: BLE001 - a job ending under our hands: try again next round
                self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.1)

    def _round(self) -> None:
        for job_id, (state, home) in running_jobs(self.env, self.launch_dir).items():
            if state != "RUNNING" or job_id in self.killed:
                continue
            launch = current_launch(home)  # a job handed a Firework (or a standby job) runs it elsewhere
            try:
                name = json.loads((launch / "FW.json").read_text())["name"]
                offline = json.loads((launch / "FW_offline.json").read_text())
            except (OSError, ValueError, KeyError):
                continue
            target = next((t for t in self.targets if name.endswith(t[0])), None)
            if target is None or "fwaction" in offline:
                continue
            how = target[1]
            if how == "scancel":
                subprocess.run(["scancel", job_id], env=self.env, check=True)
            else:
                pids = job_processes(home) or job_processes(launch)
                if not pids:  # not started yet: try again next round
                    continue
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
            self.targets.remove(target)
            self.killed[job_id] = {"suffix": target[0], "how": how, "fw_name": name}


def test_jobs_killed_mid_run_are_rerun_or_given_up_never_duplicated(
    slurm_testbed, slurm_queues, tmp_path, fault_ledger
):
    """Four jobs killed once (rerun, completed) and one killed twice (max_reruns 1: given up, recorded as a
    failed ``lost_job`` candidate and replaced)."""
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
        max_reruns=1,
        # no standby jobs: a standby job runs the (random search's instant) training with Python
        # already started, too fast for the killer to catch it mid-run; the GPU job's own start-up is
        standby={},
    )
    given_up = "it 1 / cand 0 / pdf"
    killer = JobKiller(
        slurm_testbed.env,
        launch_dir,
        [
            ("it 0 / cand 1 / pdf", "scancel"),  # an evaluation cancelled (preempted, node drained, scancel)
            ("it 0 / cand 2 / pdf", "kill9"),  # its process killed on the node (OOM killer, node crash)
            ("it 0 / train", "scancel"),  # the GPU job
            (given_up, "kill9"),
            (given_up, "scancel"),  # ... and its rerun: lost more often than max_reruns
        ],
    )
    killer.start()
    try:
        state, summary = runner.run(cfg)
    finally:
        killer.stop.set()
        killer.join(5)

    by_job = {r.slurm_job_id: r for r in summary.launches}
    assert len(killer.killed) == 5, f"{len(killer.killed)} jobs killed: {killer.killed}; {killer.errors}"
    # a very short job (the training job of a random-search campaign) may finish between the check and
    # the signal: then it is not a fault, and it must have completed normally
    landed = {j: k for j, k in killer.killed.items() if by_job[j].lost}
    assert all(by_job[j].state == "COMPLETED" for j in set(killer.killed) - set(landed))
    assert len(landed) >= 4 and [k["suffix"] for k in landed.values()].count(given_up) == 2, killer.killed
    assert {r.slurm_job_id for r in summary.lost()} == set(landed)  # each kill seen, nothing else lost
    for job_id, k in landed.items():
        kind = f"slurm_job_{k['how']}"
        fault_ledger.inject(kind, f"{k['fw_name']} (Slurm job {job_id})")
        rec = by_job[job_id]
        assert rec.lost and rec.state == "FIZZLED" and rec.error is not None
        assert "without a FireWorks result" in rec.error
        later = [r for r in summary.launches if r.fw_id == rec.fw_id and r.launch_id > rec.launch_id]
        if later:  # detected and rerun; the rerun completed (or is the second kill of the same Firework)
            assert rec.rerun and (later[-1].state == "COMPLETED" or later[-1].slurm_job_id in landed)
            if (
                later[-1].slurm_job_id in landed
            ):  # the rerun was killed too: this kill's recovery is that rerun
                rerun = runner.launchpad.launches.find_one({"slurm.job_id": later[-1].slurm_job_id})
                fault_ledger.verify(
                    kind, rerun is not None, f"fw {rec.fw_id} rerun as Slurm job {later[-1].slurm_job_id}"
                )
            else:
                fw_state = runner.launchpad.get_fw_by_id(rec.fw_id).state  # the LaunchPad's own record
                fault_ledger.verify(
                    kind, fw_state == "COMPLETED", f"fw {rec.fw_id} {fw_state} after its rerun"
                )
        else:  # the second loss of the same Firework: given up, recorded below
            assert k["suffix"] == given_up and not rec.rerun
            given_up_kind = kind
    failed = state.evaluations("failed")
    assert [(e["proposal_id"], e["failure_kind"]) for e in failed] == [("lost-jobs:0001:000", "lost_job")]
    assert "did not report" in failed[0]["error"]
    fault_ledger.verify_campaign(given_up_kind, state, failed={"lost-jobs:0001:000": "lost_job"})
    # the campaign ended normally and replaced the given-up candidate
    assert state.doc["status"] == "completed" and state.n_used() == cfg.budget
    assert len(state.proposals()) == cfg.budget + 1
    # each evaluation was written once: by a job that ran to the end, or by a killed job that had written
    # it just before the kill (its rerun then found it in the store and wrote nothing)
    for e in state.evaluations():
        job_id = e["provenance"]["pdf"]["slurm_job_id"]
        assert job_id in landed or by_job[job_id].state == "COMPLETED"
        if job_id in landed:
            fault_ledger.details.append(
                {
                    "event": "note",
                    "kind": "killed_after_write",
                    "detail": f"{e['proposal_id']} by job {job_id}",
                }
            )
    assert store_check(state) == (0, 0, True)
    # the LaunchPad keeps the Slurm side of every lost launch
    lost_docs = list(runner.launchpad.launches.find({"slurm.lost": True}))
    assert sorted(d["slurm"]["job_id"] for d in lost_docs) == sorted(landed)


def test_untracked_running_launch_goes_through_fireworks_lost_run_detection(
    slurm_queues, tmp_path, fault_ledger
):
    """An online worker's launch RUNNING without a ping past the expiration: lp.detect_lostruns reruns it."""
    from fireworks import Firework, FWorker, ScriptTask, Workflow

    from aso_workflows.cluster.offline import SlurmOfflineExecutor

    lp = mongomock_launchpad()
    ex = SlurmOfflineExecutor(lp, tmp_path / "launches", slurm_queues, lost_run_expiration=60)
    wf = Workflow(
        [Firework(ScriptTask.from_str("true"), name="a"), Firework(ScriptTask.from_str("true"), name="b")]
    )
    lp.add_wf(wf)
    fw_ids = []
    for _ in range(2):  # two online workers take a Firework each, then their nodes die (no more pings)
        fw, launch_id = lp.checkout_fw(FWorker(name="online"), str(tmp_path))
        doc = lp.launches.find_one({"launch_id": launch_id})
        history = [dict(h, updated_on="2020-01-01T00:00:00+00:00") for h in doc["state_history"]]
        lp.launches.update_one({"launch_id": launch_id}, {"$set": {"state_history": history}})
        fw_ids.append(fw.fw_id)
    fault_ledger.inject("online_worker_lost", f"fw {fw_ids[0]}")
    # the second is tracked by this controller (as an offline launch would be): left to the squeue check
    from aso_workflows.cluster.offline import LaunchRecord, _Active

    tracked = LaunchRecord(fw_ids[1], "b", 2, "default", str(tmp_path), "1", None, "")
    assert ex._detect_untracked_lost(fw_ids[0], {2: _Active(tracked)}) == [fw_ids[0]]
    assert lp.get_fw_by_id(fw_ids[0]).state == "READY" and lp.get_fw_by_id(fw_ids[1]).state == "RUNNING"
    fault_ledger.verify(
        "online_worker_lost", lp.get_fw_by_id(fw_ids[0]).state == "READY", "lp.detect_lostruns(rerun=True)"
    )


def test_feff_crash_in_a_slurm_absorber_job_is_recorded_and_replaced(
    slurm_testbed, slurm_queues, tmp_path, fault_ledger
):
    """EXAFS on Slurm (one job per absorber, an averaging job, a record job): FEFF segfaults in one job."""
    from test_faults_simulation import TINY_EXAFS, fault_feff

    exe = fault_feff(tmp_path, [("*/work/feff-slurm_0000_001/exafs/site_*", "segv")])
    exafs = {**TINY_EXAFS, "sites": 1, "engine": str(exe)}
    cfg = load_config(
        slurm_campaign(
            tmp_path,
            "feff-slurm",
            targets=[{"technique": "exafs", "structure": str(DATA / "LiNiO2.cif"), "settings": exafs}],
            budget=3,
            initial_size=2,
            batch_size=1,
        )
    )
    runner = ClusterCampaignRunner(
        launchpad=mongomock_launchpad(),
        launch_dir=tmp_path / "launches",
        queues=slurm_queues,
        job_store=shared_job_store(tmp_path / "jobstore"),
        timeout=600,
        poll_interval=0.5,
        lost_after=2.0,
    )
    fault_ledger.inject("feff_segfault_slurm", "absorber job of feff-slurm:0000:001")
    state, summary = runner.run(cfg)

    # a failed simulation is a result; the messages say what went wrong (this test failed once in 5 runs
    # of the fault files under load, cause not captured)
    why = (
        summary.workflow_state,
        summary.fw_states,
        [(r.name, r.error) for r in summary.launches if r.error],
    )
    assert summary.workflow_state == "COMPLETED" and not summary.lost(), why
    failed = state.evaluations("failed")
    assert [e["proposal_id"] for e in failed] == ["feff-slurm:0000:001"], [
        (e["proposal_id"], e["error"]) for e in failed
    ]
    assert failed[0]["failure_kind"] == "simulator_error" and "exit status -11" in failed[0]["error"], failed[
        0
    ]
    assert failed[0]["provenance"]["exafs"]["slurm_job_id"]  # the averaging job that recorded the failure
    assert state.n_used() == cfg.budget and len(state.proposals()) == cfg.budget + 1, (
        state.n_used(),
        [(p["_id"], p.get("status")) for p in state.proposals()],
    )
    fault_ledger.verify_campaign(
        "feff_segfault_slurm", state, failed={"feff-slurm:0000:001": "simulator_error"}
    )
    assert store_check(state) == (0, 0, True)
