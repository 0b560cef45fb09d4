"""Job-side launcher: FireWorks' ``rlaunch`` with a compatibility shim, plus a record of the Slurm job.

Run inside a Slurm job (the queue templates do)::

    python -m aso_workflows.cluster.rlaunch_shim singleshot --offline     # offline mode (FW.json here)
    python -m aso_workflows.cluster.rlaunch_shim rapidfire --offline [--linger 60]
    python -m aso_workflows.cluster.rlaunch_shim standby [--linger 120] [--preload torch,...]
    python -m aso_workflows.cluster.rlaunch_shim -l my_launchpad.yaml -w my_fworker_gpu.yaml rapidfire

The arguments are ``rlaunch``'s, plus ``rapidfire --offline``: the offline Firework here, then the
Fireworks the offline controller hands over to this job (:mod:`~aso_workflows.cluster.handover`), in
this process, until it says stop or ``--linger`` seconds pass without a word; ``standby``: the same
without a Firework of its own at first, after importing the ``--preload`` modules. Before handing over, this
writes ``FW_slurm.json`` in the current (launch) directory with the Slurm job id, partition, node list
and host of this job, so the controller and users can tell which Slurm job ran which Firework even after
Slurm forgot the job, and when the job script, this process and ``rlaunch`` started (start-up time).
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

__all__ = ["apply_zopen_shim", "write_slurm_record", "offline_rapidfire", "preload", "main", "SLURM_RECORD"]

SLURM_RECORD = "FW_slurm.json"
_SLURM_VARS = {
    "job_id": "SLURM_JOB_ID",
    "partition": "SLURM_JOB_PARTITION",
    "nodelist": "SLURM_JOB_NODELIST",
    "node": "SLURMD_NODENAME",
    "cpus_on_node": "SLURM_CPUS_ON_NODE",
    "gpus": "CUDA_VISIBLE_DEVICES",
}


def apply_zopen_shim() -> bool:
    """Give ``monty.io.zopen`` a default mode in FireWorks' rocket module, if monty requires one.

    FireWorks 2.1.4 ``fireworks/core/rocket.py`` calls ``zopen(fpath)`` without a mode when it reads
    ``FW_offline.json``; every monty release from 2026 makes ``mode`` a required argument, so
    ``rlaunch --offline`` dies with "zopen() missing 1 required positional argument: 'mode'".
    Pinning an older monty is not possible (pymatgen needs monty >= 2026.7.16). The wrapper below
    supplies ``mode="rt"`` (what the old default meant) and passes explicit modes through unchanged.
    Remove once FireWorks passes a mode itself.

    Returns
    -------
    bool
        True if the shim was installed, False if monty's ``zopen`` does not need it.
    """
    from fireworks.core import rocket
    from monty.io import zopen as monty_zopen

    mode = inspect.signature(monty_zopen).parameters.get("mode")
    if mode is None or mode.default is not inspect.Parameter.empty:
        return False

    def zopen(filename: str | Path, mode: str = "rt", *args: Any, **kwargs: Any) -> IO:
        return monty_zopen(filename, mode, *args, **kwargs)

    rocket.zopen = zopen
    return True


def process_start_time(pid: int | str = "self") -> float | None:
    """When process ``pid`` started (seconds since the epoch, from ``/proc``; None where there is none).

    Recorded so that a job's start-up (interpreter, imports, reading the Firework) can be told apart
    from its work and from the time it waited in the queue (``benchmarks/orchestration.py``).
    """
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of proc(5): starttime, clock ticks after boot
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def write_slurm_record(directory: str | Path = ".", **extra: Any) -> dict:
    """Write ``FW_slurm.json`` (Slurm job id, partition, nodes, host, start times) into ``directory``.

    ``process_start`` is when this process started, ``script_start`` when the job script that started
    it did (its parent shell); ``extra`` items are added (``rocket_start``, ``chained``).
    """
    record: dict[str, Any] = {key: os.environ.get(var) for key, var in _SLURM_VARS.items()}
    record["host"] = socket.gethostname()
    record["started_on"] = datetime.now(timezone.utc).isoformat()
    started = process_start_time()
    if started is not None:
        record["process_start"] = _iso(started)
    script = process_start_time(os.getppid())
    if script is not None and os.environ.get("SLURM_JOB_ID"):  # the job script (Slurm names it slurm_script)
        record["script_start"] = _iso(script)
    record.update(extra)
    path = os.path.join(directory, SLURM_RECORD)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return record


def offline_rapidfire(linger: float, standby: bool = False) -> int:
    """Run the offline Firework here (``standby``: none yet), then each one the controller hands over, in
    this process, until told to stop or ``linger`` seconds pass without a word."""
    from fireworks.core.fworker import FWorker
    from fireworks.core.rocket_launcher import launch_rocket

    from aso_workflows.cluster.handover import announce, wait_for_handover

    home = Path.cwd()
    n = 0
    while True:
        if not standby or n:
            launch_rocket(None, FWorker())  # offline: the Firework of FW.json in the working directory
            os.chdir(home)
        announce(home, n)
        nxt = wait_for_handover(home, linger)
        if nxt is None:
            return 0
        n += 1
        os.chdir(nxt)
        if os.environ.get("SLURM_JOB_ID"):
            now = _iso(time.time())  # this Firework's "process start" is when the job took it
            write_slurm_record(nxt, process_start=now, script_start=None, rocket_start=now, chained=n)


def preload(modules: list[str]) -> None:
    """Import ``modules`` now (a standby job: before its Firework arrives); one that fails is reported."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the Firework itself will raise, with its traceback
            print(f"aso: could not preload {name}: {exc!r}", file=sys.stderr)


def _option(args: list[str], name: str, default: str) -> str:
    return args[args.index(name) + 1] if name in args else default


def main(argv: list[str] | None = None) -> int:
    """Record the Slurm job, apply the shim, then run FireWorks' ``rlaunch`` with ``argv`` (or
    :func:`offline_rapidfire` for ``rapidfire --offline [--linger S]``)."""
    args = sys.argv[1:] if argv is None else list(argv)
    in_slurm = bool(os.environ.get("SLURM_JOB_ID"))
    if in_slurm:
        write_slurm_record(".")  # before the imports below, which are part of the job's start-up
    if args[:2] == ["rapidfire", "--offline"] or args[:1] == ["standby"]:
        apply_zopen_shim()
        standby = args[0] == "standby"
        if standby:
            preload([m for m in _option(args, "--preload", "").split(",") if m])
        if in_slurm:
            write_slurm_record(".", rocket_start=_iso(time.time()))
        return offline_rapidfire(float(_option(args, "--linger", "60")), standby=standby)
    from fireworks.scripts.rlaunch_run import rlaunch

    apply_zopen_shim()
    if in_slurm:
        write_slurm_record(".", rocket_start=_iso(time.time()))
    return rlaunch(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
