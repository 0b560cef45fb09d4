"""One Slurm job, several Fireworks: the offline controller hands a job the next Firework of its queue.

FireWorks' online workers do this with ``rlaunch rapidfire``: a job pulls READY Fireworks from the
LaunchPad until none is left. Offline jobs cannot reach the LaunchPad, so the controller does the
pulling for them. A job started with ``python -m aso_workflows.cluster.rlaunch_shim rapidfire --offline``
runs its Firework, then waits in its first launch directory (its *home*) for the controller's word, a
file :data:`HANDOVER` written atomically:

- ``{"launch_dir": DIR}``: a Firework reserved and prepared in ``DIR`` (``FW.json``,
  ``FW_offline.json``, as for a new job): the job runs it in the same process and waits again;
- ``{"stop": true}``: nothing for it, the job ends (at once: its allocation is not held idle);
- nothing within ``linger`` seconds (the controller is gone): the job ends.

The controller hands over a Firework that became READY when the job's previous one was read back, if
it goes to the same queue (category) with the same ``_queueadapter`` overrides; every other idle job
is told to stop in the same round. So the surrogate training and the proposal of an iteration run back
to back in one allocation of the GPU queue (torch, the store connection and the campaign state are
loaded once), and an XAS absorber job goes on with its averaging and record jobs. Everything else is
unchanged: each launch has its own launch directory and ``FW_offline.json``, lost-job detection watches
the Slurm job that runs it, and the Slurm job id of every launch is recorded as before.

**Standby jobs.** A Firework whose parents are all running (the training, while the evaluations of
its iteration run) can have its job started in advance: ``rlaunch_shim standby --linger S --preload
MODULES`` imports what the Firework will need (torch, the campaign's job module: the Firework's
``_preload`` spec), writes :data:`PILOT_STATE` and waits for the hand-over like any other job. Its
Slurm queue wait, start-up and imports then overlap the running Fireworks instead of following them.
It waits at most ``S`` seconds; a standby job that ended unused means the queue's Fireworks come later
than that, and the controller starts no more of them for that queue in that run.

This module has no imports beyond the standard library: the job side loads it at start-up.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "HANDOVER",
    "PILOT_STATE",
    "STANDBY_RECORD",
    "Pilot",
    "Pilots",
    "announce",
    "write_handover",
    "wait_for_handover",
]

HANDOVER = "FW_next.json"
"""The controller's word to a waiting job, in the job's first launch directory."""

PILOT_STATE = "FW_pilot.json"
"""Written by a job in its first launch directory each time it starts to wait: ``waiting_since`` (seconds
since the epoch) and ``handed``, the number of Fireworks handed over to it so far."""


STANDBY_RECORD = "FW_standby.json"
"""Written by the controller in a standby job's home: the Firework it was started for (``fw_id``, ``name``)."""


def announce(home: Path, handed: int) -> None:
    """Job side: say in ``home`` that this job waits for a word now (atomically)."""
    path = Path(home) / PILOT_STATE
    tmp = path.with_name(f".{PILOT_STATE}.tmp")
    tmp.write_text(json.dumps({"waiting_since": time.time(), "handed": handed}))
    os.replace(tmp, path)


def write_handover(home: Path, message: dict) -> None:
    """Write ``message`` to ``home``/:data:`HANDOVER` atomically (the job never reads half a file)."""
    path = Path(home) / HANDOVER
    tmp = path.with_name(f".{HANDOVER}.tmp")
    tmp.write_text(json.dumps(message))
    os.replace(tmp, path)


def wait_for_handover(home: Path, linger: float, poll: float = 0.02) -> Path | None:
    """Job side: the launch directory the controller hands over next, or None (stop, or ``linger`` s passed).

    The message is consumed (renamed ``FW_next.<n>.json``, kept as a record of what the job ran).
    """
    path = Path(home) / HANDOVER
    deadline = time.monotonic() + linger
    while time.monotonic() < deadline:
        try:
            message = json.loads(path.read_text())
        except (OSError, ValueError):
            time.sleep(poll)
            continue
        n = 1
        while path.with_name(f"FW_next.{n}.json").exists():
            n += 1
        os.replace(path, path.with_name(f"FW_next.{n}.json"))
        return None if message.get("stop") else Path(message["launch_dir"])
    return None


@dataclass
class Pilot:
    """A Slurm job that can run more Fireworks of its queue: its home directory and its state."""

    job_id: str
    category: str
    home: Path
    overrides: dict
    partition: str | None = None
    idle_since: float | None = None  # monotonic time its last Firework was read back; None while busy
    handed: int = 0
    standby: bool = False  # started in advance, without a Firework (see the module docstring)
    linger: float | None = None  # its own wait limit, when not the controller's default

    def ready_for_first(self, default_linger: float) -> bool:
        """A standby job not handed anything yet that will still be there to take a Firework: pending or
        starting in Slurm (no :data:`PILOT_STATE` yet), or waiting for less than half its limit."""
        if not self.standby or self.handed:
            return False
        try:
            since = float(json.loads((self.home / PILOT_STATE).read_text())["waiting_since"])
        except (OSError, ValueError, KeyError):
            return True
        return time.time() - since < (self.linger or default_linger) / 2


@dataclass
class Pilots:
    """Controller side: the Slurm jobs started in ``rapidfire --offline`` mode and which of them wait.

    ``linger`` is the jobs' own limit (seconds they wait for a word); a job idle for more than half of
    it is not handed anything (it may be gone by the time it looks).
    """

    linger: float
    by_job: dict[str, Pilot] = field(default_factory=dict)

    def started(
        self,
        job_id: str,
        category: str,
        home: str | Path,
        overrides: dict,
        partition: str | None = None,
        standby: float | None = None,
    ) -> None:
        """A Slurm job was submitted in ``rapidfire --offline`` mode from launch directory ``home`` (or as
        a standby job waiting up to ``standby`` seconds)."""
        pilot = Pilot(job_id, category, Path(home), dict(overrides), partition)
        if standby is not None:
            pilot.standby, pilot.linger = True, standby
        self.by_job[job_id] = pilot

    def standby_waiting(self, category: str) -> bool:
        """Whether a standby job of ``category`` waits for its first Firework (or is starting)."""
        return any(p.standby and not p.handed and p.category == category for p in self.by_job.values())

    def finished(self, job_id: str) -> None:
        """The job's Firework was read back: it waits for the controller's word now."""
        pilot = self.by_job.get(job_id)
        if pilot is not None:
            pilot.idle_since = time.monotonic()

    def stop(self, job_id: str) -> None:
        """Tell the job to end once its Firework is over (e.g. it raised), and forget it."""
        pilot = self.by_job.pop(job_id, None)
        if pilot is not None:
            write_handover(pilot.home, {"stop": True})

    def ended(self, job_id: str) -> None:
        """The Slurm job is over (or lost): forget it."""
        self.by_job.pop(job_id, None)

    def take(self, category: str, overrides: dict) -> Pilot | None:
        """An idle job of ``category`` started with the same queue overrides, now marked busy; or None."""
        now = time.monotonic()
        for pilot in self.by_job.values():
            fresh = pilot.idle_since is not None and now - pilot.idle_since < self.linger / 2
            fresh = fresh or pilot.ready_for_first(self.linger)
            if fresh and pilot.category == category and pilot.overrides == overrides:
                pilot.idle_since = None
                pilot.handed += 1
                return pilot
        return None

    def release_all(self) -> list[str]:
        """Tell every job still known to stop (the run ends); returns their job ids."""
        ids = list(self.by_job)
        for job_id in ids:
            self.stop(job_id)
        return ids

    def release_idle(self) -> list[str]:
        """Tell every idle job to stop (nothing was handed to it this round); returns their job ids."""
        idle = [p for p in self.by_job.values() if p.idle_since is not None]
        for pilot in idle:
            write_handover(pilot.home, {"stop": True})
            self.ended(pilot.job_id)
        return [p.job_id for p in idle]
