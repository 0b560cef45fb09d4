"""The embedded default: run a whole campaign in this process with jobflow's ``run_locally``.

No server, no cluster: campaign state goes to the embedded document store (montydb on SQLite) and job
outputs to a maggma ``MontyStore`` in the campaign folder. Re-running resumes from the store. The runner
returns the campaign's state; the command that asked for outputs (``aso run``, ``aso resume``) writes
them (:func:`aso_workflows.report.write_outputs`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aso_workflows import progress
from aso_workflows.campaign import learn
from aso_workflows.campaign.jobs import CampaignMaker
from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.config import CampaignConfig
from aso_workflows.errors import SimulationError
from aso_workflows.schemas import JobErrorDoc, now

if TYPE_CHECKING:
    from jobflow import JobStore

__all__ = ["LocalCampaignRunner", "job_store", "prepare_inputs", "quiet_loggers"]


def job_store(directory: str | Path) -> JobStore:
    """jobflow JobStore on a file-backed MontyStore (SQLite), safe for several local processes."""
    from aso_workflows.jobstore import shared_job_store

    return shared_job_store(directory)


def prepare_inputs(config: CampaignConfig) -> dict | None:
    """Check the campaign against the store and read its input files (the runner's I/O before the flow).

    A campaign of the same name with another start or other targets is refused now, with one line.
    Returns :func:`~aso_workflows.campaign.learn.read_inputs`, or ``None`` when the campaign is in the
    store already and its files are gone (``aso resume`` from the store alone).
    """
    db = get_db(config.store_spec())
    files = [Path(config.start)] + [t.source for t in config.targets]
    stored = db.campaigns.find_one({"_id": config.name}, {"_id": 1}) is not None
    if stored and not all(f.is_file() for f in files):
        learn.check_existing(config, db)
        return None
    inputs = learn.read_inputs(config)
    from pymatgen.core import Structure

    learn.check_existing(config, db, Structure.from_dict(inputs["start"]))
    return inputs


@contextlib.contextmanager
def quiet_loggers(names: tuple[str, ...] = ("jobflow", "fireworks", "maggma")) -> Iterator[None]:
    """Raise the level of these libraries' loggers to ERROR for the block, then restore them.

    jobflow's local manager logs every job at INFO and warns that FireWorks' ``stored_data`` is not
    supported locally; job failures are read from the store (``job_errors``), not from these logs.
    """
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="jobflow")
        try:
            yield
        finally:
            for n, level in saved.items():
                logging.getLogger(n).setLevel(level)


@dataclass
class LocalCampaignRunner:
    """Run (or resume) a campaign to the end on this machine.

    Attributes
    ----------
    progress
        Show the campaign bar (simulations used / budget, best mismatch) and the current phase's bar.
    errors
        After :meth:`run`: the jobs that raised during it (``job_errors`` documents, with tracebacks).
    """

    progress: bool = True
    errors: list[JobErrorDoc] = field(default_factory=list, init=False)

    def run(self, config: CampaignConfig) -> CampaignState:
        """Run the campaign; returns its state when jobflow has nothing left to run.

        One controller per campaign: a second ``aso run``/``aso resume`` on it stops with one line
        (:meth:`~aso_workflows.store.CampaignDB.lease`).
        """
        with get_db(config.store_spec()).lease(config.name):
            return self._run(config)

    def _run(self, config: CampaignConfig) -> CampaignState:
        from jobflow.managers.local import run_locally

        out = config.output_dir.resolve()
        out.mkdir(parents=True, exist_ok=True)
        inputs = prepare_inputs(config) or {}
        inputs["executor"] = {"kind": "local"}
        db = get_db(config.store_spec())
        flow = CampaignMaker().make(config, workdir=out, inputs=inputs)
        started = now()
        display: progress.CampaignDisplay | progress.Quiet = progress.Quiet()
        if self.progress:
            doc = db.campaigns.find_one({"_id": config.name}, {"n_used": 1}) or {}
            n_used = int(doc.get("n_used") or 0)
            display = progress.CampaignDisplay(config.budget, initial=n_used, desc=config.name)
        progress.install(display)
        try:
            with quiet_loggers():
                run_locally(flow, store=job_store(out / "jobstore"), log=False, ensure_success=False)
        finally:
            progress.uninstall(display)
            display.close()
        self.errors = [
            JobErrorDoc.from_mongo(d)
            for d in db.job_errors.find({"campaign": config.name, "created": {"$gte": started}})
        ]
        self.errors.sort(key=lambda e: e.created)
        if db.campaigns.find_one({"_id": config.name}, {"_id": 1}) is None:
            # the start job itself raised: nothing to load or report
            self._write_errors(out)
            raise _StartFailed(self.errors, out)
        state = CampaignState.load(db, config.name)
        if self.errors:
            self._write_errors(out)
            if state.doc.get("status") != "completed":
                state.update(status="interrupted", failed_jobs=len(self.errors))
        return state

    def _write_errors(self, out: Path) -> None:
        if self.errors:
            text = "\n\n".join(
                f"{e.where} / {e.key} ({e.created}, {e.host}):\n{e.traceback}" for e in self.errors
            )
            (out / "errors.log").write_text(text)


class _StartFailed(SimulationError):
    """The campaign's start job raised: simulating a target failed, or a bug (traceback in errors.log)."""

    def __init__(self, errors: list[JobErrorDoc], out: Path):
        self.errors = errors
        first = errors[0].error if errors else "no error was recorded"
        super().__init__(f"the campaign could not start: {first} (traceback in {out / 'errors.log'})")
