"""Job-side launcher: FireWorks' ``rlaunch`` with a compatibility shim, plus a record of the Slurm job.

Run inside a Slurm job (the queue templates do)::

    python -m aso_workflows.cluster.rlaunch_shim singleshot --offline     # offline mode (FW.json here)
    python -m aso_workflows.cluster.rlaunch_shim -l my_launchpad.yaml -w my_fworker_gpu.yaml rapidfire

The arguments are exactly ``rlaunch``'s. Before handing over, this writes ``FW_slurm.json`` in the
current (launch) directory with the Slurm job id, partition, node list and host of this job, so the
controller and users can tell which Slurm job ran which Firework even after Slurm forgot the job.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

__all__ = ["apply_zopen_shim", "write_slurm_record", "main", "SLURM_RECORD"]

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


def process_start_time() -> float | None:
    """When this process started (seconds since the epoch, from ``/proc``; None where there is none).

    Recorded so that a job's start-up (interpreter, imports, reading the Firework) can be told apart
    from its work and from the time it waited in the queue (``benchmarks/orchestration.py``).
    """
    try:
        fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of proc(5): starttime, clock ticks after boot
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def write_slurm_record(directory: str = ".") -> dict:
    """Write ``FW_slurm.json`` (Slurm job id, partition, nodes, host, start times) into ``directory``."""
    record = {key: os.environ.get(var) for key, var in _SLURM_VARS.items()}
    record["host"] = socket.gethostname()
    record["started_on"] = datetime.now(timezone.utc).isoformat()
    started = process_start_time()
    if started is not None:
        record["process_start"] = datetime.fromtimestamp(started, timezone.utc).isoformat()
    path = os.path.join(directory, SLURM_RECORD)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return record


def main(argv: list[str] | None = None) -> int:
    """Record the Slurm job, apply the shim, then run FireWorks' ``rlaunch`` with ``argv``."""
    if os.environ.get("SLURM_JOB_ID"):
        write_slurm_record(".")  # before the imports below, which are part of the job's start-up
    from fireworks.scripts.rlaunch_run import rlaunch

    apply_zopen_shim()
    return rlaunch(sys.argv[1:] if argv is None else argv) or 0


if __name__ == "__main__":
    raise SystemExit(main())
