"""The embedded default: run a whole campaign in this process with jobflow's ``run_locally``.

No server, no cluster: campaign state goes to the embedded document store (montydb on SQLite) and job
outputs to a maggma ``MontyStore`` in the campaign folder. Re-running resumes from the store.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from aso_workflows.campaign import progress
from aso_workflows.campaign.jobs import CampaignMaker
from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.config import CampaignConfig

__all__ = ["LocalCampaignRunner", "job_store"]


def job_store(directory: str | Path):
    """jobflow JobStore on a file-backed MontyStore (SQLite), safe for several local processes."""
    from aso_workflows.cluster.jobstore import shared_job_store

    return shared_job_store(directory)


class _ErrorCollector(logging.Handler):
    """Keeps the "<job> failed with exception" records of jobflow's local manager."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "failed with exception" in msg:
            self.messages.append(msg)


@dataclass
class LocalCampaignRunner:
    """Run (or resume) a campaign to the end on this machine.

    Attributes
    ----------
    progress
        Show a progress bar (simulations used / budget, best mismatch).
    write_outputs
        Write best CIFs, the history CSV and the report when done.
    """

    progress: bool = True
    write_outputs: bool = True
    errors: list[str] = field(default_factory=list, init=False)

    def run(self, config: CampaignConfig) -> CampaignState:
        from jobflow.managers.local import run_locally

        out = config.output_dir.resolve()
        out.mkdir(parents=True, exist_ok=True)
        for name in ("jobflow", "fireworks", "maggma"):
            logging.getLogger(name).setLevel(logging.WARNING)
        warnings.filterwarnings("ignore", category=FutureWarning, module="jobflow")
        flow = CampaignMaker().make(config, workdir=out)
        state = CampaignState.load(get_db(config.store_spec()), config.name)
        reporter = None
        if self.progress:
            reporter = progress.TqdmReporter(config.budget, initial=state.n_used(), desc=config.name)
            progress.install(reporter)
        # jobflow logs job exceptions at INFO on its local-manager logger: collect them instead of printing
        errors = _ErrorCollector()
        jf_logger = logging.getLogger("jobflow.managers.local")
        jf_logger.addHandler(errors)
        jf_logger.setLevel(logging.INFO)
        jf_logger.propagate = False
        try:
            run_locally(flow, store=job_store(out / "jobstore"), log=False, ensure_success=False)
        finally:
            jf_logger.removeHandler(errors)
            if reporter is not None:
                progress.uninstall(reporter)
                reporter.close()
        state = CampaignState.load(get_db(config.store_spec()), config.name)
        self.errors = errors.messages
        if errors.messages:
            (out / "errors.log").write_text("\n\n".join(errors.messages))
            if state.doc.get("status") != "completed":
                state.update(status="interrupted", failed_jobs=len(errors.messages))
        if self.write_outputs:
            from aso_workflows.report import write_outputs

            write_outputs(state, out)
        return state
