"""What Slurm and the LaunchPad say about the jobs of a workflow: launch records, ``squeue`` snapshots.

Used by the offline executor (:mod:`aso_workflows.cluster.offline`) and by anything that reports on a
campaign's Slurm jobs (``aso status --launchpad``, the web GUI, the tests).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fireworks import LaunchPad

__all__ = ["LaunchRecord", "RunSummary", "ENDED_STATES", "squeue_snapshot", "slurm_records"]

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
    turnaround into queue wait, start-up, the Firework itself and read-back (``benchmarks/orchestration.py``).
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


def squeue_snapshot(env: Mapping[str, str] | None = None, timeout: float = 30.0) -> dict[str, dict] | None:
    """This user's Slurm jobs that the controller still knows (also ended ones, for ``MinJobAge``).

    Returns
    -------
    dict or None
        job id → ``{"state", "partition", "nodes"}``; None if ``squeue`` failed (controller busy or
        down), so callers can retry instead of taking every job for ended.
    """
    try:
        out = subprocess.run(
            ["squeue", "--me", "--noheader", "--states=all", "--format=%i|%T|%P|%N"],
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
    jobs = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            jobs[parts[0]] = {"state": parts[1], "partition": parts[2], "nodes": parts[3] or None}
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
