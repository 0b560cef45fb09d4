"""Run a campaign on a cluster: the same jobflow flows, one Slurm job per job, through FireWorks.

The controller (``aso submit``) owns the LaunchPad and drives the workflow with the offline Slurm executor
(:mod:`aso_workflows.cluster.offline`); jobs open the campaign store (MongoDB, or the embedded store on a
disk the nodes share) and the jobflow JobStore themselves. See ``docs/cluster.md``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aso_workflows.campaign.jobs import CampaignMaker
from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.config import CampaignConfig

__all__ = ["ClusterCampaignRunner", "annotate_fireworks"]


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
        jobflow JobStore reachable from the jobs (:func:`aso_workflows.cluster.jobstore.shared_job_store`).
    python
        Python on the compute nodes.
    timeout, poll_interval
        Passed to the executor.
    """

    launchpad: Any
    launch_dir: Path
    queues: Mapping[str, Any]
    job_store: Any
    python: str = sys.executable
    timeout: float | None = None
    poll_interval: float = 1.0

    def executor(self):
        from aso_workflows.cluster.offline import SlurmOfflineExecutor

        return SlurmOfflineExecutor(
            launchpad=self.launchpad,
            launch_dir=self.launch_dir,
            queues=self.queues,
            job_store=self.job_store,
            python=self.python,
            timeout=self.timeout,
            poll_interval=self.poll_interval,
        )

    def submit(self, config: CampaignConfig) -> int:
        """Validate, store the campaign and add its workflow to the LaunchPad; returns an fw_id."""
        out = config.output_dir.resolve()
        out.mkdir(parents=True, exist_ok=True)
        flow = CampaignMaker().make(config, workdir=out)
        return self.executor().add_flow(flow, name=f"{config.name}")

    def run(self, config: CampaignConfig, write_outputs: bool = True):
        """Submit and drive the campaign to the end; returns ``(CampaignState, RunSummary)``."""
        for name in ("jobflow", "fireworks", "maggma"):
            logging.getLogger(name).setLevel(logging.WARNING)
        ex = self.executor()
        out = config.output_dir.resolve()
        out.mkdir(parents=True, exist_ok=True)
        fw_id = ex.add_flow(CampaignMaker().make(config, workdir=out), name=config.name)
        summary = ex.run_workflow(fw_id)
        state = CampaignState.load(get_db(config.store_spec()), config.name)
        annotate_fireworks(state, summary.launches)
        if write_outputs:
            from aso_workflows.report import write_outputs as _write

            _write(state, out)
        return state, summary


def annotate_fireworks(state: CampaignState, launches) -> int:
    """Add ``fw_id`` (and Slurm node) to the provenance of evaluations and models, matched by Slurm job id.

    The jobs record their own ``SLURM_JOB_ID``; the controller knows which Firework each Slurm job ran.
    Returns the number of documents updated.
    """
    by_job = {str(r.slurm_job_id): r for r in launches if r.slurm_job_id}
    n = 0
    for e in state.evaluations(status=None):
        updates = {}
        for t, prov in (e.get("provenance") or {}).items():
            rec = by_job.get(str((prov or {}).get("slurm_job_id")))
            if rec is not None:
                updates[f"provenance.{t}.fw_id"] = rec.fw_id
                updates[f"provenance.{t}.slurm_node"] = rec.node
        if updates:
            state.db.evaluations.update_one({"_id": e["_id"]}, {"$set": updates})
            n += 1
    for m in state.db.models.find({"campaign": state.name}):
        rec = by_job.get(str((m.get("provenance") or {}).get("slurm_job_id")))
        if rec is not None:
            state.db.models.update_one({"_id": m["_id"]}, {"$set": {"provenance.fw_id": rec.fw_id}})
            n += 1
    return n
