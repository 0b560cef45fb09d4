"""Run jobflow flows as Slurm jobs through FireWorks' offline mode, with the LaunchPad in one controller.

The controller (this process) owns the LaunchPad (MongoDB in production, in-process ``mongomock`` in
tests); compute jobs never reach it. Each round of :meth:`SlurmOfflineExecutor.run`:

1. the result file ``FW_offline.json`` of every job in flight is looked at (a ``stat``; read only when
   it changed); a finished Firework's result is read back at once with ``lp.recover_offline(launch_id)``
   — while its Slurm job may still be exiting —, which completes the launch and applies the FWAction
   (detours, additions: dynamic Fireworks become READY in this same round);
2. every READY Firework of the workflow is reserved (``lp.reserve_fw``), its launch directory prepared
   with ``FW.json`` + ``FW_offline.json`` (FireWorks' ``queue_launcher.setup_offline_job``) and either
   handed over to a Slurm job of its queue whose Firework just ended (``reuse_jobs``:
   :mod:`~aso_workflows.cluster.handover`; training and proposal run back to back in one GPU job), or
   submitted with ``sbatch`` from a job script rendered from the user's Slurm template for its
   ``_category``; jobs that got nothing are told to end;
3. every ``squeue_interval`` seconds one ``squeue`` call tells which jobs ended without a result (lost)
   and why pending ones wait (Slurm's reason, kept in the launch's ``slurm.reason``);
4. sleep: 0.02 s after a round that read back or submitted something, doubling while nothing happens,
   up to ``poll_interval``; stop when nothing is running and nothing is READY, or at ``timeout``.

Lost jobs: a Slurm job that ended (scancel, preemption, walltime, a node lost, its process killed) or
vanished from ``squeue`` without FireWorks' result file is a lost run. After ``lost_after`` seconds its
launch is marked FIZZLED and the Firework rerun (``lp.rerun_fw``: READY, submitted again next round),
at most ``max_reruns`` times per Firework; the jobs' store writes are keyed, so a rerun never
duplicates what the lost job already wrote. Launches of the workflow RUNNING in the LaunchPad that this
controller does not track (online workers) go through FireWorks' own ``lp.detect_lostruns(rerun=True)``
after ``lost_run_expiration`` seconds without a ping. See ``docs/reliability.md``.

The job side runs ``python -m aso_workflows.cluster.rlaunch_shim rapidfire --offline`` (``singleshot
--offline`` without ``reuse_jobs``) in the launch directory. jobflow's ``JobFiretask`` writes job outputs to the JobStore from inside the job, so the
JobStore must be reachable from compute nodes: MongoDB, or a file-backed store (maggma ``MontyStore``
with ``storage="sqlite"``) on a disk the nodes share. In-memory stores are refused.

Where the Slurm job id of every launch is recorded:

- on the job side, ``FW_slurm.json`` in the launch directory (``SLURM_JOB_ID``, partition, nodes);
- in the LaunchPad: the launch's ``reservation_id`` (as ``qlaunch -r`` does) and a ``slurm`` field of the
  launch document (job id, partition, queue category, node, Slurm state);
- in the controller: :attr:`SlurmOfflineExecutor.slurm_jobs` (fw_id → Slurm job ids) and the
  :class:`RunSummary` returned by :meth:`~SlurmOfflineExecutor.run`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aso_workflows.cluster.handover import STANDBY_RECORD, Pilots, write_handover
from aso_workflows.cluster.queues import partition_nodes
from aso_workflows.cluster.rlaunch_shim import SLURM_RECORD
from aso_workflows.cluster.slurm import (
    BLOCKING_REASONS,
    ENDED_STATES,
    LaunchRecord,
    RunSummary,
    slurm_records,
    squeue_snapshot,
)
from aso_workflows.cluster.workflow import check_job_store, to_workflow
from aso_workflows.errors import AsoError, InputError

if TYPE_CHECKING:
    from collections.abc import Callable

    from fireworks import LaunchPad, Workflow
    from jobflow import Flow, Job

_T = TypeVar("_T")

__all__ = [
    "SlurmOfflineExecutor",
    "DatabaseUnavailable",
    "RunSummary",
    "LaunchRecord",
    "DEFAULT_CATEGORY",
    "squeue_snapshot",
    "slurm_records",
    "to_workflow",
    "initialise_launchpad",
]

logger = logging.getLogger(__name__)

DEFAULT_CATEGORY = "default"
"""Key in ``queues`` for Fireworks without a ``_category``."""


class DatabaseUnavailable(AsoError):
    """The LaunchPad's server stayed unreachable longer than the controller waits (one line)."""


@dataclass
class _Active:
    record: LaunchRecord
    ended_seen: float | None = None  # monotonic time the Slurm job was first seen ended
    marked_running: bool = False
    stamp: tuple[int, int] | None = None  # (mtime, size) of FW_offline.json when last read


_MIN_POLL = 0.02
"""Seconds slept after a round in which something was read back or submitted."""


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    # contextlib.chdir is Python >= 3.11 only (we support 3.10); monty.os.cd is deprecated
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not there yet, or caught half-written


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


@dataclass
class SlurmOfflineExecutor:
    """Drive FireWorks workflows (e.g. jobflow flows) to the end, one Slurm job per Firework.

    Attributes
    ----------
    launchpad
        The FireWorks LaunchPad, used only in this process (see :mod:`aso_workflows.cluster.launchpad`).
    launch_dir
        Base directory for launch directories (``<launch_dir>/fw<fw_id>[_<n>]``); must be on a disk the
        compute nodes share with the controller.
    queues
        FireWorks category → queue adapter (a ``CommonAdapter`` from
        :func:`~aso_workflows.cluster.queues.slurm_queue`, or the path of a ``my_qadapter_*.yaml``).
        Fireworks without ``_category`` use the ``"default"`` entry. A Firework may override queue fields
        in its spec's ``_queueadapter`` (FireWorks' convention, e.g. ``{"walltime": "08:00:00"}``).
    job_store
        The jobflow ``JobStore`` the jobs write to, serialised into every Firework (so the jobs open it
        themselves): a MongoDB store, or a ``MontyStore(..., storage="sqlite")`` on a shared disk. None:
        each job uses the ``JOB_STORE`` of its own jobflow settings (``JOBFLOW_CONFIG_FILE``).
    python
        Python executable on the compute nodes (with aso-workflows installed). Default: this one, which
        fits a shared installation; use ``"python"`` when the template's ``pre_rocket`` activates it.
    poll_interval
        Longest sleep between two rounds, in seconds (each round ``stat``s the result files of the jobs in
        flight; the sleep starts at 0.02 s after a round in which something happened and doubles).
    squeue_interval
        Seconds between two ``squeue`` calls (lost jobs, pending reasons) and between two reads of the
        workflow from the LaunchPad when nothing happened.
    reuse_jobs
        Hand a READY Firework to a Slurm job of the same queue whose Firework just ended, instead of a
        new Slurm job (:mod:`~aso_workflows.cluster.handover`); such jobs run ``rlaunch_shim rapidfire
        --offline`` and wait up to ``linger`` seconds for the controller's word (which comes within a
        round: they are told to end when there is nothing for them).
    standby
        Category → seconds (with ``reuse_jobs``): as soon as a Firework of that category waits only for
        Fireworks in flight (the training, while its iteration's evaluations run), a job of its queue
        is started for it in advance, imports what the Firework's ``_preload`` spec names, and waits up
        to that long to be handed it; Slurm's queue wait, the start-up and the imports then overlap the
        running Fireworks. After one such job ended unused (the Fireworks it waits for run longer), no
        more are started for that category in this run. ``{}``: none.
    timeout
        Give up after this many seconds (None: no limit). Running jobs are left running unless
        ``cancel_on_timeout``; calling :meth:`run_workflow` again picks them up.
    lost_after
        Seconds to wait, after Slurm reports a job ended, for its FireWorks result to appear (shared
        file systems may show it late); then the launch is marked FIZZLED as a lost run.
    max_queued
        At most this many Slurm jobs in flight (0: no limit).
    cancel_on_timeout
        ``scancel`` the jobs still in flight at timeout and mark their launches FIZZLED.
    max_reruns
        Rerun a Firework whose Slurm job was lost, or whose job raised, at most this many times (0: never;
        the launch stays FIZZLED and jobs that tolerate a missing parent go on without its output).
    rerun_failed
        Also rerun (within ``max_reruns``) Fireworks whose job raised. Off by default (FireWorks leaves
        them FIZZLED); campaigns turn it on: their jobs return simulation failures as results, so a job
        that raises met the infrastructure (a busy store, a node in trouble), which a rerun often cures.
    lost_run_expiration
        ``lp.detect_lostruns`` expiration (seconds without a ping) for RUNNING launches of the workflow
        that this controller does not track; checked every ``lost_run_check_interval`` seconds.
    env
        Environment for ``sbatch``/``squeue``/``scancel`` (None: this process's).
    db_outage_limit
        Seconds to wait for an unreachable LaunchPad server (restarted, failing over, network cut)
        before stopping with :class:`DatabaseUnavailable` (one line; ``aso resume`` continues later).
        Meanwhile the Slurm jobs in flight keep running; their results are read back once it answers.
    """

    launchpad: Any
    launch_dir: Path
    queues: Mapping[str, Any]
    job_store: Any = None
    python: str = sys.executable
    poll_interval: float = 0.25
    squeue_interval: float = 5.0
    reuse_jobs: bool = True
    linger: float = 60.0
    standby: Mapping[str, float] = field(default_factory=lambda: {"gpu": 120.0})
    timeout: float | None = None
    lost_after: float = 30.0
    max_queued: int = 0
    cancel_on_timeout: bool = False
    env: Mapping[str, str] | None = None
    max_reruns: int = 2
    rerun_failed: bool = False
    lost_run_expiration: float = 4 * 3600.0
    lost_run_check_interval: float = 300.0
    db_outage_limit: float = 600.0
    slurm_jobs: dict[int, list[str]] = field(default_factory=dict, init=False)
    _deferred: list = field(default_factory=list, init=False, repr=False)
    _pilots: Pilots = field(init=False, repr=False)
    _busy: bool = field(default=False, init=False, repr=False)
    _standby_for: set[int] = field(default_factory=set, init=False, repr=False)
    _standby_off: set[str] = field(default_factory=set, init=False, repr=False)
    _nodes_of: dict[str | None, frozenset[str] | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        from aso_workflows.cluster.queues import load_queue_adapter  # noqa: F811

        self._pilots = Pilots(linger=self.linger)

        self.launch_dir = Path(self.launch_dir).resolve()
        self.launch_dir.mkdir(parents=True, exist_ok=True)
        queues = {}
        for category, qa in dict(self.queues).items():
            if isinstance(qa, str | Path):
                qa = load_queue_adapter(qa)
            if "$${rocket_launch}" not in Path(qa.template_file).read_text():
                raise InputError(
                    f"queues[{category!r}] ({qa.template_file})", "template has no $${rocket_launch} line"
                )
            queues[str(category)] = qa
        if not queues:
            raise InputError(
                "queues", "at least one queue is needed (key 'default' for Fireworks without _category)"
            )
        self.queues = queues
        if self.job_store is not None:
            check_job_store(self.job_store)
            # create the store's tables/indexes here, before any job opens it (no first-writer races)
            self.job_store.connect()

    # ---- public API ------------------------------------------------------------------------------
    @property
    def rocket_launch(self) -> str:
        """The job-side command (the templates' ``$${rocket_launch}``)."""
        mode = f"rapidfire --offline --linger {self.linger:g}" if self.reuse_jobs else "singleshot --offline"
        return f"{shlex.quote(self.python)} -m aso_workflows.cluster.rlaunch_shim {mode}"

    def add_flow(self, flow: Flow | Job | Workflow, name: str | None = None) -> int:
        """Add a jobflow ``Flow``/``Job`` (or a FireWorks ``Workflow``) to the LaunchPad; returns an fw_id of it."""
        from fireworks import Workflow

        from aso_workflows.cluster.launchpad import describe_launchpad
        from aso_workflows.store import server_refusal

        wf = flow if isinstance(flow, Workflow) else to_workflow(flow, self.job_store, name)
        initialise_launchpad(self.launchpad)
        try:
            mapping = self.launchpad.add_wf(wf)
        except Exception as exc:
            refused = server_refusal(
                exc, f"LaunchPad {describe_launchpad(self.launchpad)}: the server refused the workflow"
            )
            if refused is None:
                raise
            raise refused from None
        return min(mapping.values())

    def run(self, flow: Flow | Job | Workflow, name: str | None = None) -> RunSummary:
        """Add ``flow`` and run it to the end (see :meth:`run_workflow`)."""
        return self.run_workflow(self.add_flow(flow, name=name))

    def run_workflow(self, fw_id: int) -> RunSummary:
        """Run the workflow containing ``fw_id`` until nothing is running or READY, or until ``timeout``.

        Launches of this workflow already submitted by an earlier controller (RESERVED/RUNNING offline
        runs with a Slurm job id) are picked up again.
        """
        t0 = time.monotonic()
        records: list[LaunchRecord] = []
        active: dict[int, _Active] = {}
        for rec in self._wait_for_db(lambda: self._reattach(fw_id)):
            records.append(rec)
            active[rec.launch_id] = _Active(rec)
        timed_out = False
        clock = {"lost_check": time.monotonic(), "squeue": 0.0, "workflow": 0.0}
        delay = _MIN_POLL
        while True:
            done = self._wait_for_db(lambda: self._round(fw_id, records, active, clock))
            if done:
                break
            if self.timeout is not None and time.monotonic() - t0 > self.timeout:
                timed_out = True
                logger.warning("timeout after %.0f s with %d Slurm jobs in flight", self.timeout, len(active))
                if self.cancel_on_timeout:
                    self._wait_for_db(lambda: self._cancel(list(active.values())))
                break
            delay = _MIN_POLL if self._busy else min(2 * delay, self.poll_interval)
            time.sleep(delay)
        pilots = self._pilots.release_all()  # busy ones end after their Firework (a timeout)
        if not timed_out:  # results are read before their jobs exit: let them leave the queue first
            self._wait_for_exit({r.slurm_job_id for r in records} | set(pilots))
        wf = self._wait_for_db(lambda: self._workflow(fw_id))
        return RunSummary(
            fw_ids=sorted(wf["nodes"]),
            workflow_state=wf["state"],
            fw_states={int(k): v for k, v in wf["fw_states"].items()},
            launches=records,
            timed_out=timed_out,
            wall_s=time.monotonic() - t0,
        )

    def _round(self, fw_id: int, records: list, active: dict, clock: dict) -> bool:
        """One round: read back finished Fireworks, submit (or hand over) READY ones; True when the
        workflow has ended. Sets ``_busy`` when something was read back or submitted."""
        self._busy = False
        while self._deferred:  # LaunchPad writes that an outage interrupted
            self._deferred[0]()
            self._deferred.pop(0)
        now = time.monotonic()
        if now - clock["lost_check"] > self.lost_run_check_interval:
            clock["lost_check"] = now
            self._detect_untracked_lost(fw_id, active)
        snapshot = None
        if active and now - clock["squeue"] >= self.squeue_interval:
            clock["squeue"] = now
            snapshot = squeue_snapshot(self.env)
        for launch_id in list(active):
            if self._poll(active[launch_id], snapshot):
                self._busy = True
                del active[launch_id]
        if snapshot is not None:
            self._forget_ended_standby(snapshot)
            self._standby_gives_way(snapshot, active)
        ready: list[int] = []
        if self._busy or not active or now - clock["workflow"] >= self.squeue_interval:
            clock["workflow"] = now
            wf = self._workflow(fw_id)
            ready = sorted(int(i) for i, s in wf["fw_states"].items() if s == "READY")
        for ready_id in ready:
            if self.max_queued and len(active) >= self.max_queued:
                break
            rec = self._submit(ready_id)
            if rec is not None:
                self._busy = True
                records.append(rec)
                active[rec.launch_id] = _Active(rec)
        self._pilots.release_idle()  # jobs whose Firework ended and that got nothing: they end now
        if self._busy and self.reuse_jobs and set(self.standby) - self._standby_off:
            self._start_standby(fw_id)
        if not active and not ready:
            wf = self._workflow(fw_id)
            return not any(s == "READY" for s in wf["fw_states"].values())
        return False

    def _start_standby(self, fw_id: int) -> None:
        """Start a standby job for each Firework of a ``standby`` category that waits only for Fireworks in
        flight (one per category at a time; see :mod:`~aso_workflows.cluster.handover`)."""
        lp = self.launchpad
        wf = lp.workflows.find_one({"nodes": fw_id}, {"links": 1, "fw_states": 1}) or {}
        states = {int(k): v for k, v in (wf.get("fw_states") or {}).items()}
        parents: dict[int, list[int]] = {}
        for parent, children in (wf.get("links") or {}).items():
            for child in children:
                parents.setdefault(int(child), []).append(int(parent))
        soon = [
            i
            for i, state in states.items()
            if state == "WAITING"
            and i not in self._standby_for
            and parents.get(i)
            and all(states.get(p) in ("RESERVED", "RUNNING", "COMPLETED") for p in parents[i])
        ]
        categories = [c for c in self.standby if c not in self._standby_off]
        if not soon or not categories:
            return
        query = {"fw_id": {"$in": soon}, "spec._category": {"$in": categories}}
        projection = {"fw_id": 1, "name": 1, "spec._category": 1, "spec._queueadapter": 1, "spec._preload": 1}
        for doc in lp.fireworks.find(query, projection):
            spec = doc.get("spec", {})
            category, queue = self._queue_for(spec.get("_category"), doc["fw_id"], doc.get("name", ""))
            if self._pilots.standby_waiting(category):
                continue
            self._standby_for.add(doc["fw_id"])
            home = self._new_launch_dir(f"{doc['fw_id']}-standby")
            (home / STANDBY_RECORD).write_text(
                json.dumps({"fw_id": doc["fw_id"], "name": doc.get("name", "")})
            )
            overrides = dict(spec.get("_queueadapter") or {})
            wait = float(self.standby[category])
            launch = (
                f"{shlex.quote(self.python)} -m aso_workflows.cluster.rlaunch_shim standby --linger {wait:g}"
            )
            if spec.get("_preload"):
                launch += f" --preload {shlex.quote(','.join(spec['_preload']))}"
            job_id, partition = self._submit_script(
                home, f"standby-{doc['fw_id']}", launch, category, queue, overrides
            )
            self._pilots.started(job_id, category, home, overrides, partition, standby=wait)
            logger.info(
                "Slurm job %s on partition %s: standby for fw %d (%s)",
                job_id,
                partition,
                doc["fw_id"],
                doc.get("name"),
            )

    def _forget_ended_standby(self, snapshot: dict[str, dict]) -> None:
        """Standby jobs that ended without being handed anything: stop starting them for their category."""
        for pilot in list(self._pilots.by_job.values()):
            state = (snapshot.get(pilot.job_id) or {}).get("state", "ENDED")
            if pilot.standby and not pilot.handed and state in ENDED_STATES | {"ENDED"}:
                self._pilots.ended(pilot.job_id)
                self._standby_off.add(pilot.category)
                logger.info(
                    "standby job %s (%s) ended unused: its Fireworks come later than %g s; no more standby "
                    "jobs for this queue in this run",
                    pilot.job_id,
                    pilot.category,
                    pilot.linger or self.linger,
                )

    def _standby_gives_way(self, snapshot: dict[str, dict], active: dict) -> None:
        """Unused standby jobs end when a job of this run waits for resources on a node they share.

        A standby job holds its allocation while it waits; on a cluster whose GPU partition shares
        nodes with the CPU one (a single-node cluster, a workstation) that allocation can be what the
        evaluations wait for. Then the standby job is cancelled and no more are started for its queue
        in this run (a line in the log says so): the evaluations come first.
        """
        waiting: dict[str, str | None] = {}
        for act in active.values():
            info = snapshot.get(act.record.slurm_job_id) or {}
            if info.get("state") == "PENDING" and str(info.get("reason") or "").startswith("Resources"):
                waiting[act.record.slurm_job_id] = info.get("partition") or act.record.partition
        if not waiting:
            return
        for pilot in list(self._pilots.by_job.values()):
            if not pilot.standby or pilot.handed:
                continue
            mine = self._nodes(pilot.partition)
            blocked = [j for j, part in waiting.items() if mine is None or mine & (self._nodes(part) or mine)]
            if not blocked:
                continue
            self._pilots.stop(pilot.job_id)
            subprocess.run(
                ["scancel", pilot.job_id],
                capture_output=True,
                timeout=60,
                env=None if self.env is None else dict(self.env),
            )
            self._standby_off.add(pilot.category)
            logger.info(
                "standby job %s (%s) cancelled: job %s of this run waits for resources on a node it holds; "
                "no more standby jobs for this queue in this run",
                pilot.job_id,
                pilot.category,
                blocked[0],
            )

    def _nodes(self, partition: str | None) -> frozenset[str] | None:
        """The node names of ``partition`` (``sinfo``, asked once per run); None when unknown."""
        if partition not in self._nodes_of:
            nodes = partition_nodes(partition, self.env)
            self._nodes_of[partition] = None if nodes is None else frozenset(n["node"] for n in nodes)
        return self._nodes_of[partition]

    def _wait_for_exit(self, job_ids: set[str], limit: float = 30.0) -> None:
        """Wait (up to ``limit`` s) until Slurm lists none of ``job_ids`` as queued or running."""
        deadline = time.monotonic() + limit
        while job_ids and time.monotonic() < deadline:
            snapshot = squeue_snapshot(self.env)
            if snapshot is None:
                return
            if not any(snapshot.get(j, {}).get("state", "ENDED") not in ENDED_STATES for j in job_ids):
                return
            time.sleep(0.1)

    def _wait_for_db(self, call: Callable[[], _T]) -> _T:
        """``call()``, retried while the LaunchPad server is unreachable, for up to ``db_outage_limit`` s."""
        from pymongo.errors import ConnectionFailure

        since = None
        while True:
            try:
                out = call()
            except ConnectionFailure as exc:
                now = time.monotonic()
                first = " ".join(str(exc).split(", Timeout:")[0].split())[:160]
                if since is None:
                    since = now
                    logger.warning(
                        "LaunchPad unreachable (%s): waiting up to %.0f s for it to come back; Slurm jobs "
                        "keep running",
                        first,
                        self.db_outage_limit,
                    )
                if now - since > self.db_outage_limit:
                    raise DatabaseUnavailable(
                        f"the LaunchPad's MongoDB server has been unreachable for {now - since:.0f} s "
                        f"({first}); the controller stops, the Slurm jobs in flight keep running and "
                        "nothing stored is lost: run aso resume CAMPAIGN once the server answers"
                    ) from None
                time.sleep(min(5.0, max(1.0, self.poll_interval)))
                continue
            if since is not None:
                logger.warning("LaunchPad back after %.0f s; carrying on", time.monotonic() - since)
            return out

    # ---- submission ------------------------------------------------------------------------------
    def _workflow(self, fw_id: int) -> dict:
        wf = self.launchpad.workflows.find_one({"nodes": fw_id}, {"nodes": 1, "fw_states": 1, "state": 1})
        if wf is None:
            raise InputError(f"fw_id {fw_id}", "no workflow in the LaunchPad contains this Firework")
        return wf

    def _queue_for(self, category: str | None, fw_id: int, name: str) -> tuple[str, Any]:
        key = category or DEFAULT_CATEGORY
        if key not in self.queues:
            raise InputError(
                f"queues[{key!r}]",
                f"no queue for Firework {fw_id} ({name}) of category {key!r}; queues: {', '.join(sorted(self.queues))}",
            )
        return key, self.queues[key]

    def _new_launch_dir(self, fw_id: int | str) -> Path:
        n = 1
        while True:
            path = self.launch_dir / (f"fw{fw_id}" if n == 1 else f"fw{fw_id}_{n}")
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                n += 1

    def _submit(self, fw_id: int) -> LaunchRecord | None:
        """Reserve Firework ``fw_id`` and run it: handed over to an idle job of its queue, or ``sbatch``."""
        from fireworks import FWorker
        from fireworks.queue.queue_launcher import setup_offline_job

        t0 = time.perf_counter()
        lp = self.launchpad
        doc = lp.fireworks.find_one(
            {"fw_id": fw_id}, {"name": 1, "spec._category": 1, "spec._queueadapter": 1}
        )
        spec = doc.get("spec", {})
        category, queue = self._queue_for(spec.get("_category"), fw_id, doc.get("name", ""))
        overrides = dict(spec.get("_queueadapter") or {})
        launch_dir = self._new_launch_dir(fw_id)
        fworker = FWorker(name=f"aso-slurm-offline-{category}", category=category)
        fw, launch_id = lp.reserve_fw(fworker, str(launch_dir), fw_id=fw_id)
        if fw is None:  # taken meanwhile (another controller)
            launch_dir.rmdir()
            return None
        pilot = self._pilots.take(category, overrides) if self.reuse_jobs else None
        try:
            with _chdir(launch_dir):  # setup_offline_job writes FW.json and FW_offline.json into the cwd
                setup_offline_job(lp, fw, launch_id)
            if pilot is not None:
                write_handover(
                    pilot.home, {"launch_dir": str(launch_dir), "fw_id": fw_id, "launch_id": launch_id}
                )
                job_id, partition, home = pilot.job_id, pilot.partition, pilot.home
            else:
                job_id, partition = self._submit_job(fw, launch_dir, category, queue, overrides)
                home = launch_dir
        except BaseException:
            self._release(launch_id)  # back to READY; the failed launch is forgotten
            raise
        rec = LaunchRecord(
            fw_id=fw_id,
            name=fw.name,
            launch_id=launch_id,
            category=category,
            launch_dir=str(launch_dir),
            slurm_job_id=job_id,
            partition=partition,
            submitted=_now(),
            slurm_state="RUNNING" if pilot is not None else "PENDING",
            chained=pilot is not None,
            submit_s=time.perf_counter() - t0,
            job_home=str(home),
        )
        self.slurm_jobs.setdefault(fw_id, []).append(job_id)
        how = "handed over to" if pilot is not None else "→"
        logger.info("fw %d (%s) %s Slurm job %s on partition %s", fw_id, fw.name, how, job_id, partition)

        def record() -> None:
            lp.set_reservation_id(launch_id, job_id)
            self._tag_launch(rec)

        self._defer_on_outage(record)  # the job runs already: keep tracking it whatever happens here
        return rec

    def _submit_job(
        self, fw: Any, launch_dir: Path, category: str, queue: Any, overrides: dict
    ) -> tuple[str, str | None]:
        """Render the job script of ``fw`` from its queue and ``sbatch`` it; ``(job id, partition)``."""
        from fireworks.utilities.fw_utilities import get_slug

        job_id, partition = self._submit_script(
            launch_dir, f"fw{fw.fw_id}-{get_slug(fw.name)}", self.rocket_launch, category, queue, overrides
        )
        if self.reuse_jobs:
            self._pilots.started(job_id, category, launch_dir, overrides, partition)
        return job_id, partition

    def _submit_script(
        self, launch_dir: Path, job_name: str, rocket_launch: str, category: str, queue: Any, overrides: dict
    ) -> tuple[str, str | None]:
        """Render ``queue``'s template for ``launch_dir`` and ``sbatch`` it; ``(job id, partition)``."""
        from fireworks.fw_config import QUEUE_JOBNAME_MAXLEN, SUBMIT_SCRIPT_NAME
        from fireworks.utilities.fw_serializers import load_object

        qa = load_object(queue.to_dict())  # a copy per launch, as FireWorks' queue launcher does
        qa.update(job_name=job_name[:QUEUE_JOBNAME_MAXLEN], rocket_launch=rocket_launch)
        qa.update(overrides)
        script = launch_dir / SUBMIT_SCRIPT_NAME
        script.write_text(qa.get_script_str(str(launch_dir)))
        return self._sbatch(script, category, queue), qa.get("partition")

    def _release(self, launch_id: int) -> None:
        """Undo a reservation whose job was never submitted (later, if the server is unreachable now)."""

        def release() -> None:
            self.launchpad.cancel_reservation(launch_id)
            self.launchpad.forget_offline(launch_id)

        self._defer_on_outage(release)

    def _defer_on_outage(self, write: Callable[[], object]) -> None:
        """Run a LaunchPad write now, or at the start of the next round if the server is unreachable."""
        from pymongo.errors import ConnectionFailure

        try:
            write()
        except ConnectionFailure as exc:
            logger.warning("LaunchPad write deferred (%s)", str(exc).split(",")[0][:120])
            self._deferred.append(write)

    def _sbatch(self, script: Path, category: str, queue: Any) -> str:
        # sbatch is called here rather than through CommonAdapter.submit_to_queue, which changes the
        # process's working directory and logs a failure instead of raising it.
        try:
            out = subprocess.run(
                ["sbatch", "--parsable", script.name],
                cwd=script.parent,
                capture_output=True,
                text=True,
                timeout=120,
                env=None if self.env is None else dict(self.env),
            )
        except (subprocess.SubprocessError, OSError) as exc:
            raise InputError(f"queues[{category!r}]", f"sbatch could not run ({exc})") from None
        job_id = out.stdout.strip().split(";")[0]
        if out.returncode != 0 or not job_id.isdigit():
            msg = " ".join((out.stderr or out.stdout).split())[:300]
            raise InputError(
                f"queues[{category!r}] ({queue.template_file})", f"sbatch refused {script}: {msg}"
            )
        return job_id

    # ---- tracking --------------------------------------------------------------------------------
    def _poll(self, act: _Active, snapshot: dict[str, dict] | None) -> bool:
        """Update one in-flight launch from its result file and, in rounds that called ``squeue``, from the
        ``snapshot``; True once it is finished (read back, or lost)."""
        rec = act.record
        offline = self._changed_result(act)
        if offline is not None and "fwaction" in offline:
            return self._read_back(act, offline)
        if offline is not None and "started_on" in offline and not act.marked_running:
            act.marked_running = self._mark_running(rec, offline)
        if snapshot is None:
            return False
        info = snapshot.get(rec.slurm_job_id)
        if info is not None:
            rec.slurm_state = info["state"]
            rec.node = info["nodes"] or rec.node
            rec.partition = info["partition"] or rec.partition
            self._note_reason(rec, info.get("reason") or None)
            if info["state"] not in ENDED_STATES:
                return False
        # Slurm says the job ended (or forgot it): its result may have been written just now
        offline = _read_json(Path(rec.launch_dir) / "FW_offline.json") or {}
        if "fwaction" in offline:
            return self._read_back(act, offline)
        now = time.monotonic()
        if act.ended_seen is None:
            act.ended_seen = now
        if now - act.ended_seen < self.lost_after:
            return False
        # Slurm says the job ended but FireWorks never wrote a result: killed (walltime, memory, node).
        self._read_job_side_record(rec)
        rec.start = offline.get("started_on")
        rec.error = (
            f"Slurm job {rec.slurm_job_id} ended ({rec.slurm_state or 'no longer in squeue'}) without a FireWorks "
            f"result; see {Path(rec.launch_dir) / f'slurm-{rec.slurm_job_id}.out'}"
        )
        rec.lost = True
        self._pilots.ended(rec.slurm_job_id)
        self._fizzle(rec)
        logger.warning("fw %d (%s): %s", rec.fw_id, rec.name, rec.error)
        self._rerun_lost(rec)
        return True

    def _changed_result(self, act: _Active) -> dict | None:
        """The launch's ``FW_offline.json`` if it changed since the last look (one ``stat`` otherwise)."""
        path = Path(act.record.launch_dir) / "FW_offline.json"
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == act.stamp:
            return None
        offline = _read_json(path)
        if offline is not None:  # caught half-written: looked at again next round
            act.stamp = stamp
        return offline

    def _read_back(self, act: _Active, offline: dict) -> bool:
        """Complete a launch whose Firework wrote its result (FWAction); True (it is finished)."""
        rec = act.record
        rec.seen = _now()
        t0 = time.perf_counter()
        self._recover(rec)
        rec.recover_s = time.perf_counter() - t0
        rec.recovered = _now()
        rec.start = offline.get("started_on")
        rec.end = offline.get("completed_on")
        self._read_job_side_record(rec)
        launch = self.launchpad.launches.find_one({"launch_id": rec.launch_id}, {"state": 1})
        rec.state = (launch or {}).get("state", offline.get("state", rec.state))
        self._note_reason(rec, None)
        if rec.state == "FIZZLED":  # the job raised: its process gets nothing more to run
            self._pilots.stop(rec.slurm_job_id)
        else:
            self._pilots.finished(rec.slurm_job_id)  # it waits for the controller's word now
        if rec.state == "FIZZLED" and self.rerun_failed:
            # the job raised: jobs report simulation failures as results, so an exception here is
            # the infrastructure (store busy, node trouble) or a bug: rerun like a lost job
            exc = ((offline["fwaction"] or {}).get("stored_data") or {}).get("_exception") or {}
            stack = str(exc.get("_stacktrace", "")) if isinstance(exc, dict) else str(exc)
            lines = [ln.strip() for ln in stack.splitlines() if ln.strip()]
            rec.error = f"job raised: {lines[-1][:300] if lines else 'no traceback'}"
            rec.raised = True
            logger.warning("fw %d (%s) Slurm job %s: %s", rec.fw_id, rec.name, rec.slurm_job_id, rec.error)
            self._tag_launch(rec)
            self._rerun_lost(rec)
            return True
        self._tag_launch(rec)
        logger.info("fw %d (%s) Slurm job %s: %s", rec.fw_id, rec.name, rec.slurm_job_id, rec.state)
        return True

    def _note_reason(self, rec: LaunchRecord, reason: str | None) -> None:
        """Keep Slurm's pending reason of the launch's job (LaunchPad ``slurm.reason``); warn once about
        a reason that waiting does not cure (``PartitionConfig``: the job can never start)."""
        if reason == rec.slurm_reason:
            return
        rec.slurm_reason = reason
        self._tag_launch(rec)
        key = (reason or "").split(",")[0]
        if key in BLOCKING_REASONS:
            logger.warning(
                "fw %d (%s): Slurm job %s is pending (%s): it %s; fix its queue file and aso resume",
                rec.fw_id,
                rec.name,
                rec.slurm_job_id,
                reason,
                BLOCKING_REASONS[key],
            )

    def _rerun_lost(self, rec: LaunchRecord) -> bool:
        """Make the Firework of a lost (or raising) launch READY again, unless that happened ``max_reruns`` times."""
        launches = self.launchpad.launches
        n_lost = launches.count_documents(
            {"fw_id": rec.fw_id, "slurm.lost": True}
        ) + launches.count_documents({"fw_id": rec.fw_id, "slurm.raised": True})
        if n_lost > self.max_reruns:
            logger.warning("fw %d (%s) lost or failed %d times: not rerun again", rec.fw_id, rec.name, n_lost)
            return False
        self.launchpad.rerun_fw(rec.fw_id)
        rec.rerun = True
        self._tag_launch(rec)
        logger.warning(
            "fw %d (%s) rerun after a lost Slurm job (%d of %d)", rec.fw_id, rec.name, n_lost, self.max_reruns
        )
        return True

    def _detect_untracked_lost(self, fw_id: int, active: dict[int, _Active]) -> list[int]:
        """FireWorks' lost-run detection for RUNNING launches of the workflow this controller does not track."""
        tracked = {a.record.fw_id for a in active.values()}
        nodes = [n for n in self._workflow(fw_id)["nodes"] if n not in tracked]
        if not nodes:
            return []
        try:
            _, lost_fw_ids, _ = self.launchpad.detect_lostruns(
                expiration_secs=self.lost_run_expiration, rerun=True, query={"fw_id": {"$in": nodes}}
            )
        except Exception as exc:  # noqa: BLE001 - a backstop: never let it stop the controller
            logger.warning("detect_lostruns failed: %s", exc)
            return []
        for lost in lost_fw_ids:
            logger.warning("fw %d: lost run (no ping for %.0f s), rerun", lost, self.lost_run_expiration)
        return list(lost_fw_ids)

    def _recover(self, rec: LaunchRecord, final: bool = True) -> None:
        # recover_offline FIZZLES the launch on any exception unless ignore_errors: only right for the
        # final recovery (the job has ended, its file is complete). While the job runs, the rocket may be
        # rewriting FW_offline.json as we read it; then the RUNNING mark is simply skipped.
        # recover_offline also FIZZLES on a lost connection, and prints its traceback: ask the server
        # first, so an outage goes to _wait_for_db (which waits) instead
        self.launchpad.connection.admin.command("ping")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Unable to find FW_ping.json": offline jobs ping hourly
            self.launchpad.recover_offline(rec.launch_id, ignore_errors=not final, print_errors=final)

    def _mark_running(self, rec: LaunchRecord, offline: dict) -> bool:
        """Show a started job as RUNNING in the LaunchPad (recover_offline without a result yet)."""
        if "started_on" not in offline:
            return False
        if "fwaction" not in offline:
            self._recover(rec, final=False)
            rec.state = "RUNNING"
            rec.start = offline["started_on"]
            self._tag_launch(rec)
        return True

    def _fizzle(self, rec: LaunchRecord) -> None:
        self.launchpad.mark_fizzled(rec.launch_id)
        self.launchpad.forget_offline(rec.launch_id)
        rec.state = "FIZZLED"
        self._tag_launch(rec)

    def _cancel(self, acts: list[_Active]) -> None:
        ids = [a.record.slurm_job_id for a in acts]
        if ids:
            subprocess.run(
                ["scancel", *ids],
                capture_output=True,
                timeout=60,
                env=None if self.env is None else dict(self.env),
            )
        for act in acts:
            act.record.error = f"cancelled at the controller's timeout ({self.timeout:g} s)"
            self._fizzle(act.record)

    def _read_job_side_record(self, rec: LaunchRecord) -> None:
        side = _read_json(Path(rec.launch_dir) / SLURM_RECORD) or {}
        rec.process_start = side.get("process_start") or rec.process_start
        rec.node = side.get("node") or rec.node
        rec.partition = side.get("partition") or rec.partition

    def _tag_launch(self, rec: LaunchRecord) -> None:
        """Keep the Slurm side of a launch in its LaunchPad document (recover_offline rewrites the doc)."""
        slurm: dict[str, Any] = {
            "job_id": rec.slurm_job_id,
            "partition": rec.partition,
            "category": rec.category,
            "node": rec.node,
            "state": rec.slurm_state,
        }
        if rec.slurm_reason:
            slurm["reason"] = rec.slurm_reason
        if rec.chained:
            slurm["chained"] = True
        if rec.job_home:
            slurm["home"] = rec.job_home
        if rec.error:
            slurm["error"] = rec.error
        if rec.lost or rec.raised:
            slurm["lost" if rec.lost else "raised"] = True
            slurm["rerun"] = rec.rerun
        self.launchpad.launches.update_one({"launch_id": rec.launch_id}, {"$set": {"slurm": slurm}})

    def _reattach(self, fw_id: int) -> list[LaunchRecord]:
        """Launches of this workflow an earlier controller submitted and did not recover yet."""
        lp = self.launchpad
        nodes = self._workflow(fw_id)["nodes"]
        out = []
        for run in lp.offline_runs.find({"fw_id": {"$in": nodes}, "completed": False, "deprecated": False}):
            launch = lp.launches.find_one({"launch_id": run["launch_id"]})
            if not launch or launch.get("state") not in ("RESERVED", "RUNNING"):
                continue
            job_id = next(
                (h["reservation_id"] for h in launch.get("state_history", []) if h.get("reservation_id")),
                None,
            )
            if job_id is None:
                # reserved but never submitted (controller died in between): make it READY again
                lp.cancel_reservation(run["launch_id"])
                lp.forget_offline(run["launch_id"])
                continue
            slurm = launch.get("slurm") or {}
            rec = LaunchRecord(
                fw_id=run["fw_id"],
                name=run.get("name", ""),
                launch_id=run["launch_id"],
                category=slurm.get("category", DEFAULT_CATEGORY),
                launch_dir=launch["launch_dir"],
                slurm_job_id=str(job_id),
                partition=slurm.get("partition"),
                submitted=str(run.get("created_on")),
                state=launch["state"],
                chained=bool(slurm.get("chained")),
                job_home=slurm.get("home") or launch["launch_dir"],
            )
            if self.reuse_jobs:  # it may wait for a word once its Firework ends: told at read-back
                overrides = (
                    lp.fireworks.find_one({"fw_id": rec.fw_id}, {"spec._queueadapter": 1}) or {}
                ).get("spec", {}).get("_queueadapter") or {}
                self._pilots.started(
                    rec.slurm_job_id, rec.category, str(rec.job_home), overrides, rec.partition
                )
            self.slurm_jobs.setdefault(rec.fw_id, []).append(rec.slurm_job_id)
            out.append(rec)
            logger.info("picked up fw %d (%s), Slurm job %s", rec.fw_id, rec.name, rec.slurm_job_id)
        return out


def initialise_launchpad(lp: LaunchPad) -> bool:
    """Prepare a LaunchPad database that was never used (as ``lpad reset`` would); True if it did.

    FireWorks needs its id counters before the first workflow (otherwise: "Could not get next FW id").
    Only a database without Fireworks and workflows is touched; one that has them but lost its counters
    is refused with one line rather than reset.
    """
    if lp.fw_id_assigner.find_one({}) is not None:
        return False
    if lp.fireworks.count_documents({}) or lp.workflows.count_documents({}):
        raise InputError(
            f"LaunchPad ({lp.name})",
            "holds Fireworks but no id counters (fw_id_assigner); repair it or use a new database",
        )
    lp._restart_ids(1, 1)  # what LaunchPad.reset does after dropping the collections
    lp.tuneup(bkground=False)
    logger.info("initialised the empty LaunchPad database %s (ids, indexes)", lp.name)
    return True
