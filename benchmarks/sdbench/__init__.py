"""The structure-determination benchmark (``benchmarks/structure_determination.py``) in parts.

- :mod:`sdbench.suites`: methods, suite settings, one run's campaign fields (the cases: ``cases.py``);
- :mod:`sdbench.running`: one run, a suite (in processes, with timeouts);
- :mod:`sdbench.accounting`: what runs cost (simulations, calculations, finite differences), summaries;
- :mod:`sdbench.tables`: ``results.json``, ``curves.csv``, the tables; :mod:`sdbench.plots`: the figures.
"""
