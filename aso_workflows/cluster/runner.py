"""Run a campaign on a cluster: the same jobflow flows, one Slurm job per job, through FireWorks.

The controller (``aso submit``) owns the LaunchPad and drives the workflow with the offline Slurm executor
(:mod:`aso_workflows.cluster.offline`); jobs open the campaign store (MongoDB, or the embedded store on a
disk the nodes share) and the jobflow JobStore themselves. The runner returns the campaign's state; the
commands that asked for outputs (``aso submit``, ``aso resume``) write them
(:func:`aso_workflows.report.write_outputs`). See ``docs/cluster.md``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aso_workflows.campaign.jobs import CampaignMaker
from aso_workflows.campaign.local import prepare_inputs, quiet_loggers
from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.config import CampaignConfig
from aso_workflows.schemas import EvaluationDoc, ModelDoc, Provenance

if TYPE_CHECKING:
    from collections.abc import Iterable

    from jobflow import Flow

    from aso_workflows.cluster.offline import SlurmOfflineExecutor
    from aso_workflows.cluster.slurm import LaunchRecord, RunSummary

__all__ = ["ClusterCampaignRunner", "annotate_fireworks", "cancel_orphan_jobs"]


@dataclass
class ClusterCampaignRunner:
    """Submit a campaign as a FireWorks workflow and (optionally) drive it to the end through Slurm.

    Attributes
    ----------
    launchpad
        FireWorks LaunchPad (see :func:`aso_workflows.cluster.launchpad.load_launchpad`).
    launch_dir
        Launch directories, on a disk shared with the compute nodes.
    queues
        FireWorks category → queue adapter or ``my_qadapter_*.yaml`` (``default`` and ``gpu``).
    job_store
        jobflow JobStore reachable from the jobs (:func:`aso_workflows.jobstore.shared_job_store`).
    python
        Python on the compute nodes.
    timeout, poll_interval, lost_after, max_reruns
        Passed to the executor (lost Slurm jobs: see ``docs/reliability.md``).
    standby
        Queues whose jobs are started in advance, with their wait limit in seconds (``None``: the
        executor's default, ``{"gpu": 120}``; ``{}``: none; ``docs/cluster.md``).
    """

    launchpad: Any
    launch_dir: Path
    queues: Mapping[str, Any]
    job_store: Any
    python: str = sys.executable
    timeout: float | None = None
    poll_interval: float = 1.0
    lost_after: float = 30.0
    max_reruns: int = 2
    standby: Mapping[str, float] | None = None

    def executor(self) -> SlurmOfflineExecutor:
        from aso_workflows.cluster.offline import SlurmOfflineExecutor

        executor = SlurmOfflineExecutor(
            launchpad=self.launchpad,
            launch_dir=self.launch_dir,
            queues=self.queues,
            job_store=self.job_store,
            python=self.python,
            timeout=self.timeout,
            poll_interval=self.poll_interval,
            lost_after=self.lost_after,
            max_reruns=self.max_reruns,
            rerun_failed=True,
        )
        if self.standby is not None:
            executor.standby = dict(self.standby)
        return executor

    def _flow(self, config: CampaignConfig, online: bool = False) -> Flow:
        """The campaign's start flow, with its input files read here and how it runs recorded."""
        out = config.output_dir.resolve()
        out.mkdir(parents=True, exist_ok=True)
        inputs = prepare_inputs(config) or {}
        inputs["executor"] = {**self.executor_record(), **({"online": True} if online else {})}
        return CampaignMaker().make(config, workdir=out, inputs=inputs)

    def submit(self, config: CampaignConfig) -> int:
        """Validate the campaign and add its workflow to the LaunchPad; returns an fw_id.

        The workflow's first job creates the campaign in the store (online workers run it); the
        campaign document records ``executor.online`` (no controller drives it: ``aso status`` says so).
        """
        return self.executor().add_flow(self._flow(config, online=True), name=f"{config.name}")

    def run(self, config: CampaignConfig, resume: bool = False) -> tuple[CampaignState, RunSummary]:
        """Submit and drive the campaign to the end; returns ``(CampaignState, RunSummary)``.

        With ``resume`` (``aso resume``, after the controller died): an unfinished workflow of this
        campaign in the LaunchPad (a MongoDB LaunchPad outlives its controller) is driven on, picking up
        its Slurm jobs; otherwise (an in-process LaunchPad died with the controller) the dead
        controller's Slurm jobs still queued or running in ``launch_dir`` are cancelled and the latest
        iteration is rebuilt from the campaign store, which reuses every stored evaluation, model and
        proposal (see ``docs/reliability.md``).
        """
        # one controller per campaign: a second `aso submit`/`aso resume` on it stops with one line
        with get_db(config.store_spec()).lease(config.name):
            return self._run(config, resume)

    def _run(self, config: CampaignConfig, resume: bool) -> tuple[CampaignState, RunSummary]:
        ex = self.executor()
        config.output_dir.resolve().mkdir(parents=True, exist_ok=True)
        fw_id = self._unfinished_workflow(config.name) if resume else None
        if fw_id is None:
            if resume:
                cancelled = cancel_orphan_jobs(Path(self.launch_dir), env=ex.env)
                if cancelled:
                    logging.getLogger(__name__).warning(
                        "cancelled %d Slurm job(s) of the previous controller: %s",
                        len(cancelled),
                        " ".join(cancelled),
                    )
            fw_id = ex.add_flow(self._flow(config), name=config.name)
        db = get_db(config.store_spec())
        with quiet_loggers():
            summary = ex.run_workflow(fw_id)
        state = CampaignState.load(db, config.name)
        annotate_fireworks(state, summary.launches)
        return state, summary

    def _unfinished_workflow(self, name: str) -> int | None:
        """fw_id of this campaign's newest workflow in the LaunchPad that has not ended, if any."""
        docs = list(
            self.launchpad.workflows.find(
                {"name": name, "state": {"$in": ["READY", "RESERVED", "RUNNING", "WAITING"]}},
                {"nodes": 1, "updated_on": 1},
            )
        )
        if not docs:
            return None
        newest = max(docs, key=lambda d: str(d.get("updated_on", "")))
        return min(newest["nodes"])

    def executor_record(self) -> dict:
        """How the campaign runs on the cluster, for its campaign document (``aso resume`` reuses it).

        ``launchpad``: the launchpad file's path or the URI without its password (None for a LaunchPad
        nothing can reopen, such as an in-process test one).
        """
        from aso_workflows.cluster.launchpad import launchpad_reference

        queues = {}
        for category, qa in dict(self.queues).items():
            queues[str(category)] = str(qa) if isinstance(qa, str | Path) else qa.to_dict()
        store = getattr(self.job_store, "docs_store", None)
        path = getattr(store, "database_path", None)
        return {
            "kind": "slurm",
            "launch_dir": str(Path(self.launch_dir).resolve()),
            "queues": queues,
            "job_store": str(path) if path and path != ":memory:" else None,
            "python": self.python,
            "launchpad": launchpad_reference(self.launchpad),
        }


def cancel_orphan_jobs(launch_dir: Path, env: Mapping[str, str] | None = None) -> list[str]:
    """``scancel`` this user's Slurm jobs that have not ended and whose working directory is in ``launch_dir``.

    Those are the jobs of a controller that died: nobody will read their results back. Their store
    writes are keyed, so a job that still finishes before the cancel duplicates nothing. Returns the
    job ids cancelled.
    """
    import subprocess

    base = Path(launch_dir).resolve()
    try:
        out = subprocess.run(
            ["squeue", "--me", "--noheader", "--format=%i|%T|%Z"],
            capture_output=True,
            text=True,
            timeout=30,
            env=None if env is None else dict(env),
        )
    except (subprocess.SubprocessError, OSError):
        return []
    ids = []
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        job_id, _, workdir = parts
        try:
            inside = Path(workdir).resolve().is_relative_to(base)
        except (OSError, ValueError):
            inside = False
        if inside:
            ids.append(job_id)
    if ids:
        subprocess.run(
            ["scancel", *ids], capture_output=True, timeout=60, env=None if env is None else dict(env)
        )
    return ids


def annotate_fireworks(state: CampaignState, launches: Iterable[LaunchRecord]) -> int:
    """Add ``fw_id`` (and Slurm node) to the provenance of evaluations and models, matched by Slurm job id.

    The jobs record their own ``SLURM_JOB_ID``; the controller knows which Firework each Slurm job ran.
    Returns the number of documents updated.
    """
    by_job = {str(r.slurm_job_id): r for r in launches if r.slurm_job_id}
    n = 0
    for e in state.evaluations(status=None):
        updates: dict[str, Any] = {}
        for t, prov in (e.get("provenance") or {}).items():
            rec = by_job.get(str((prov or {}).get("slurm_job_id")))
            if rec is not None:
                ran = Provenance(fw_id=rec.fw_id, slurm_node=rec.node)
                updates.update(EvaluationDoc.set_embedded(f"provenance.{t}", ran))
        if updates:
            state.db.evaluations.update_one({"_id": e["_id"]}, {"$set": updates})
            n += 1
    for m in state.db.models.find({"campaign": state.name}):
        rec = by_job.get(str((m.get("provenance") or {}).get("slurm_job_id")))
        if rec is not None:
            ran = Provenance(fw_id=rec.fw_id)
            state.db.models.update_one({"_id": m["_id"]}, {"$set": ModelDoc.set_embedded("provenance", ran)})
            n += 1
    return n
