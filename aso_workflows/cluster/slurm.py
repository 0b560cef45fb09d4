"""What Slurm and the LaunchPad say about the jobs of a workflow: launch records, ``squeue`` snapshots.

Used by the offline executor (:mod:`aso_workflows.cluster.offline`) and by anything that reports on a
campaign's Slurm jobs (``aso status --launchpad``, the web GUI, the tests).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fireworks import LaunchPad

__all__ = [
    "LaunchRecord",
    "RunSummary",
    "ENDED_STATES",
    "BLOCKING_REASONS",
    "squeue_snapshot",
    "slurm_records",
    "jobs_in",
    "reason_hint",
]

logger = logging.getLogger(__name__)

# Slurm job states after which the job will not run again (squeue --states=all shows them for MinJobAge).
ENDED_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "SPECIAL_EXIT",
    "TIMEOUT",
}


@dataclass
class LaunchRecord:
    """One Firework launch submitted as one Slurm job.

    ``state`` is the FireWorks state of the launch (RESERVED → RUNNING → COMPLETED/FIZZLED);
    ``start``/``end`` are the times the Firework started and finished inside the job (ISO, UTC);
    ``process_start`` when the job's Python process started (from the job's ``FW_slurm.json``) and
    ``recovered`` when the controller read the result back: with ``submitted`` they split a job's
    turnaround into queue wait, start-up, the Firework itself and read-back (``benchmarks/orchestration.py``);
    ``submit_s`` is the controller's time to reserve, prepare and ``sbatch`` it, ``seen`` when the
    controller noticed its result and ``recover_s`` the time ``recover_offline`` took. ``slurm_reason``
    is Slurm's reason while the job is pending (``squeue %r``). ``chained``: the launch was handed over
    to the Slurm job of a Firework that had just ended (:mod:`~aso_workflows.cluster.handover`):
    ``slurm_job_id`` is that job's, ``submitted`` the hand-over and ``process_start`` when the job took it;
    ``job_home`` is the launch directory the Slurm job started in (where it waits for the next one).
    """

    fw_id: int
    name: str
    launch_id: int
    category: str
    launch_dir: str
    slurm_job_id: str
    partition: str | None
    submitted: str
    state: str = "RESERVED"
    slurm_state: str | None = None
    node: str | None = None
    start: str | None = None
    end: str | None = None
    error: str | None = None
    lost: bool = False
    raised: bool = False
    rerun: bool = False
    process_start: str | None = None
    recovered: str | None = None
    slurm_reason: str | None = None
    chained: bool = False
    submit_s: float | None = None
    seen: str | None = None
    recover_s: float | None = None
    job_home: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunSummary:
    """What :meth:`SlurmOfflineExecutor.run` did for one workflow."""

    fw_ids: list[int]
    workflow_state: str
    fw_states: dict[int, str]
    launches: list[LaunchRecord]
    timed_out: bool
    wall_s: float

    @property
    def completed(self) -> bool:
        return self.workflow_state == "COMPLETED"

    def slurm_job_ids(self) -> dict[int, str]:
        """fw_id → Slurm job id of its last launch."""
        return {rec.fw_id: rec.slurm_job_id for rec in self.launches}

    def by_name(self, name: str) -> list[LaunchRecord]:
        return [rec for rec in self.launches if rec.name == name]

    def lost(self) -> list[LaunchRecord]:
        """Launches detected as lost (their Slurm job ended without a FireWorks result)."""
        return [rec for rec in self.launches if rec.lost]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["fw_states"] = {str(k): v for k, v in self.fw_states.items()}
        return d


# squeue's pending reasons (%r) that waiting does not cure: the job asks for what the partition, the
# account or the QOS never gives (Slurm's "Resources"/"Priority" are ordinary waits).
BLOCKING_REASONS = {
    "PartitionConfig": "asks for more than the partition's nodes have (CPUs, memory, GPUs): it will never start",
    "PartitionNodeLimit": "asks for more nodes than the partition allows: it will never start",
    "PartitionTimeLimit": "asks for a longer walltime than the partition allows: it will never start",
    "BadConstraints": "its constraints match no node: it will never start",
    "InvalidAccount": "the account is not valid: it will never start",
    "InvalidQOS": "the QOS is not valid: it will never start",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "ReqNodeNotAvail": "the nodes it needs are not available (down, drained or reserved)",
    "JobHeldUser": "held by the user (scontrol release)",
    "JobHeldAdmin": "held by an administrator",
    "DependencyNeverSatisfied": "its dependency can never be satisfied",
}
_WAIT_HINTS = {
    "Resources": "waiting for free resources",
    "Priority": "waiting behind jobs of higher priority",
    "None": "about to be scheduled",
    "BeginTime": "waiting for its begin time",
    "Dependency": "waiting for another job",
}


def reason_hint(reason: str | None) -> str:
    """What a pending reason of ``squeue %r`` means, in a few words ('' when unknown or none)."""
    if not reason:
        return ""
    key = reason.split(",")[0].strip("() ")
    if key in BLOCKING_REASONS:
        return BLOCKING_REASONS[key]
    if key in _WAIT_HINTS:
        return _WAIT_HINTS[key]
    if key.startswith(("QOS", "Assoc")):
        return "held back by an account or QOS limit"
    return ""


def _squeue(args: list[str], env: Mapping[str, str] | None, timeout: float) -> list[list[str]] | None:
    """Rows of ``squeue --me --noheader`` with ``args`` (a ``--format`` joined by ``|``); None on failure."""
    try:
        out = subprocess.run(
            ["squeue", "--me", "--noheader", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
        )
    except (subprocess.SubprocessError, OSError) as exc:
        logger.warning("squeue failed: %s", exc)
        return None
    if out.returncode != 0:
        logger.warning("squeue failed: %s", out.stderr.strip()[:200])
        return None
    return [line.strip().split("|") for line in out.stdout.splitlines() if line.strip()]


def jobs_in(
    launch_dir: str | Path, env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> list[dict] | None:
    """This user's Slurm jobs that have not ended and run (or will run) inside ``launch_dir``.

    Those are a campaign's jobs (their working directory is a launch directory of it). Each is a dict
    ``{"job_id", "name", "state", "reason", "hint", "blocked", "partition", "submitted", "waiting_s",
    "workdir", "firework"}``: ``reason`` is Slurm's (``squeue %r``: ``Resources``, ``PartitionConfig``,
    ...), ``hint`` says what it means, ``blocked`` is True for reasons that waiting does not cure
    (:data:`BLOCKING_REASONS`), ``firework`` the Firework's name from the launch directory's ``FW.json``.

    Returns
    -------
    list of dict or None
        None when ``squeue`` is not there or failed (not a Slurm host, controller down).
    """
    import json
    import shutil
    from datetime import datetime

    if shutil.which("squeue") is None:
        return None
    rows = _squeue(["--format=%i|%T|%r|%P|%V|%Z|%j"], env, timeout)
    if rows is None:
        return None
    base = Path(launch_dir).resolve()
    out = []
    for parts in rows:
        if len(parts) < 7:
            continue
        job_id, state, reason, partition, submitted, workdir = parts[:6]
        try:
            if not Path(workdir).resolve().is_relative_to(base):
                continue
        except (OSError, ValueError):
            continue
        fw_name = ""
        with contextlib.suppress(OSError, ValueError):
            fw_name = str(json.loads((Path(workdir) / "FW.json").read_text()).get("name", ""))
        with contextlib.suppress(OSError, ValueError, KeyError):  # a job started in advance (handover.py)
            fw_name = (
                fw_name or f"{json.loads((Path(workdir) / 'FW_standby.json').read_text())['name']} (standby)"
            )
        waiting = None
        with contextlib.suppress(ValueError):
            waiting = max(0.0, (datetime.now() - datetime.fromisoformat(submitted)).total_seconds())
        reason = "" if reason in ("None", "(null)") and state != "PENDING" else reason
        out.append(
            {
                "job_id": job_id,
                "name": "|".join(parts[6:]),
                "state": state,
                "reason": reason,
                "hint": reason_hint(reason) if state == "PENDING" else "",
                "blocked": state == "PENDING" and reason.split(",")[0] in BLOCKING_REASONS,
                "partition": partition,
                "submitted": submitted,
                "waiting_s": waiting if state == "PENDING" else None,
                "workdir": workdir,
                "firework": fw_name,
            }
        )
    return out


def squeue_snapshot(env: Mapping[str, str] | None = None, timeout: float = 30.0) -> dict[str, dict] | None:
    """This user's Slurm jobs that the controller still knows (also ended ones, for ``MinJobAge``).

    Returns
    -------
    dict or None
        job id → ``{"state", "partition", "nodes", "reason"}`` (``reason``: Slurm's pending reason, ``%r``,
        '' for jobs not pending); None if ``squeue`` failed (controller busy or
        down), so callers can retry instead of taking every job for ended.
    """
    rows = _squeue(["--states=all", "--format=%i|%T|%P|%N|%r"], env, timeout)
    if rows is None:
        return None
    jobs = {}
    for parts in rows:
        if len(parts) == 5:
            reason = parts[4] if parts[1] == "PENDING" else ""
            jobs[parts[0]] = {
                "state": parts[1],
                "partition": parts[2],
                "nodes": parts[3] or None,
                "reason": reason,
            }
    return jobs


def slurm_records(launchpad: LaunchPad, fw_ids: list[int] | None = None) -> list[dict]:
    """The Slurm side of every launch the executor made (from the LaunchPad, readable by any process).

    Returns
    -------
    list of dict
        ``{"fw_id", "launch_id", "state", "job_id", "partition", "category", "node", "slurm_state"}`` per
        launch, in launch order; ``fw_ids`` restricts to those Fireworks.
    """
    query: dict = {"slurm": {"$exists": True}}
    if fw_ids is not None:
        query["fw_id"] = {"$in": list(fw_ids)}
    out = []
    for doc in launchpad.launches.find(query, {"fw_id": 1, "launch_id": 1, "state": 1, "slurm": 1}):
        slurm = dict(doc["slurm"])
        slurm["slurm_state"] = slurm.pop("state", None)
        out.append({"fw_id": doc["fw_id"], "launch_id": doc["launch_id"], "state": doc["state"], **slurm})
    return sorted(out, key=lambda r: r["launch_id"])
