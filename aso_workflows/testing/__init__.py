"""Test and demo tools — not used by the product.

- :mod:`~aso_workflows.testing.slurm_testbed`: a real single-node Slurm cluster for tests and demos.
- :mod:`~aso_workflows.testing.probe`: a small flow that checks a cluster set-up end to end.
- :mod:`~aso_workflows.testing.launchpad`: a FireWorks LaunchPad on in-process mongomock.
- :mod:`~aso_workflows.testing.generators`: known target structures for examples and benchmarks.

Kept in the package (not under ``tests/``) because the benchmarks, the examples and ``docs/cluster.md``
use them too.
"""
