"""Running campaigns on a cluster: FireWorks + Slurm, all workflow state in MongoDB.

- :mod:`~aso_workflows.cluster.runner`: :class:`ClusterCampaignRunner`, a campaign as a FireWorks
  workflow driven to its end through Slurm (``aso submit``, ``aso resume``).
- :mod:`~aso_workflows.cluster.offline`: :class:`SlurmOfflineExecutor`, a controller that owns the
  LaunchPad and runs every Firework as its own Slurm job in FireWorks' offline mode.
- :mod:`~aso_workflows.cluster.slurm`: launch records and what Slurm says about the jobs.
- :mod:`~aso_workflows.cluster.workflow`: a jobflow flow as a named FireWorks workflow.
- :mod:`~aso_workflows.cluster.queues`: queue adapters on the templates in ``slurm_templates/``.
- :mod:`~aso_workflows.cluster.launchpad`: open the LaunchPad from a file or URI.
- :mod:`~aso_workflows.cluster.rlaunch_shim`: the job-side ``rlaunch`` entry point.

See ``docs/cluster.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562): `python -m aso_workflows.cluster.rlaunch_shim`
# must not find their module already imported by this package (runpy warns), and jobs start faster.
_EXPORTS = {
    "ClusterCampaignRunner": "runner",
    "SlurmOfflineExecutor": "offline",
    "RunSummary": "slurm",
    "LaunchRecord": "slurm",
    "slurm_records": "slurm",
    "to_workflow": "workflow",
    "shared_job_store": "aso_workflows.jobstore",  # shared with the local executor
    "load_launchpad": "launchpad",
    "load_queue_adapter": "queues",
    "slurm_queue": "queues",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = _EXPORTS[name]
        return getattr(importlib.import_module(module if "." in module else f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
