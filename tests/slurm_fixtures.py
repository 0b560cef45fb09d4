"""pytest plugin: a real single-node Slurm cluster for the tests marked ``slurm``.

Register it in ``tests/conftest.py`` with ``pytest_plugins = ["slurm_fixtures"]``.

The cluster (munged, slurmctld, slurmd; :class:`~aso_workflows.testing.slurm_testbed.SlurmTestbed`) starts once
per session in ``/tmp/aso-slurm-testbed`` and is stopped at the end; a testbed already running from that
directory is reused and left running. Without root or the Debian packages ``slurm-wlm`` and ``munge``,
the tests that use it are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aso_workflows.cluster.queues import slurm_queue
from aso_workflows.testing.slurm_testbed import SlurmTestbed, testbed_unavailable_reason


@pytest.fixture(scope="session")
def slurm_testbed() -> Iterator[SlurmTestbed]:
    """A running Slurm cluster with partitions ``cpu`` (default) and ``gpu`` on this machine."""
    reason = testbed_unavailable_reason()
    if reason:
        pytest.skip(reason)
    bed = SlurmTestbed()
    bed.start()
    try:
        yield bed
    finally:
        bed.stop()


@pytest.fixture(scope="session")
def slurm_queues(slurm_testbed) -> dict:
    """Queue adapters for the testbed on the shipped templates: ``default`` → cpu, ``gpu`` → gpu."""
    common = {"walltime": "00:05:00", "nodes": 1, "ntasks": 1, "cpus_per_task": 1}
    return {
        "default": slurm_queue("cpu", partition="cpu", **common),
        "gpu": slurm_queue("gpu", partition="gpu", gres="gpu:1", **common),
    }
