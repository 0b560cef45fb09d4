"""A small jobflow flow that checks a cluster set-up end to end: fan-out, GPU routing, dynamic addition.

``probe_flow()`` has the shape of a campaign iteration without the science::

    fan_out ──replace──► probe fan-0, fan-1, ... (parallel, each sleeps)
        └──► probe "train" (tagged ``_category: gpu``) ──► grow ──addition──► probe "added"

Every probe returns where and when it ran (Slurm job id, partition, host, start/end), so a test or a
user can see that jobs ran as separate Slurm jobs, that the GPU job reached the GPU partition, and that a
job appended at run time ran too. The jobs live in the package (not in a test file) because Slurm jobs
import them by module name.
"""

from __future__ import annotations

import os
import socket
import time

from jobflow import Flow, Job, JobConfig, Response, job

__all__ = ["probe", "fan_out", "grow", "fail", "probe_flow", "PROBE_NAMES"]

PROBE_NAMES = ("fan_out", "probe", "grow")


def _where() -> dict:
    return {
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


@job
def probe(label: str, sleep: float = 0.0, inputs: list | dict | None = None) -> dict:
    """Sleep ``sleep`` seconds and report where and when this ran (``inputs`` only orders the flow)."""
    start = time.time()
    time.sleep(sleep)
    n_inputs = len(inputs) if isinstance(inputs, list) else int(inputs is not None)
    return {"label": label, **_where(), "start": start, "end": time.time(), "n_inputs": n_inputs}


@job
def fan_out(n: int, sleep: float) -> Response:
    """Replace itself by ``n`` parallel probes; its output becomes the list of their outputs."""
    jobs: list[Flow | Job] = [probe(f"fan-{i}", sleep) for i in range(n)]
    return Response(replace=Flow(jobs, output=[j.output for j in jobs], name="fan"))


@job
def grow(previous: dict, label: str = "added", sleep: float = 0.0) -> Response:
    """A dynamic job: report where it ran and append one more probe to the running workflow."""
    start = time.time()
    added = probe(label, sleep, inputs=previous)
    record = {"label": "grow", **_where(), "start": start, "end": time.time(), "added_uuid": added.uuid}
    return Response(output=record, addition=added)


@job
def fail(how: str = "raise") -> dict:
    """Fail on purpose: ``raise`` an exception (FireWorks records FIZZLED) or ``exit`` the process."""
    if how == "exit":
        os._exit(3)  # the job dies before FireWorks can write a result: a lost run
    raise RuntimeError("probe failure on purpose")


def probe_flow(
    n: int = 3, sleep: float = 3.0, gpu_category: str | None = "gpu", name: str = "cluster-probe"
) -> Flow:
    """The check flow described in the module docstring.

    Parameters
    ----------
    n
        Number of parallel probes made by ``fan_out``.
    sleep
        Seconds each parallel probe sleeps (long enough to see them overlap).
    gpu_category
        FireWorks category of the "train" probe (``None``: no category).
    """
    fan: Job = fan_out(n, sleep)
    train: Job = probe("train", 0.0, inputs=fan.output)
    if gpu_category:
        train.config = JobConfig(manager_config={"_category": gpu_category})
    train.name = "train"
    dyn: Job = grow(train.output)
    return Flow([fan, train, dyn], name=name)
