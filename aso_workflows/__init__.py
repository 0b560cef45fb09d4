"""aso-workflows: atomic structure from spectroscopy by active learning.

A re-implementation of ActiveStructOpt (Slagle, Alamgir, Fung, arXiv 2602.20959) as jobflow/FireWorks
workflows: real PDF/FEFF simulations, a graph-neural-network surrogate ensemble, and campaign state in a
MongoDB-compatible document store.
"""

from __future__ import annotations

__version__ = "0.1.0"
