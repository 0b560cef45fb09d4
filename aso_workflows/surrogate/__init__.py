"""Surrogate models: structure (fixed composition) → spectrum with a calibrated uncertainty.

``neighbors`` (batched periodic neighbour list in torch), ``model`` (the stacked GNN ensemble),
``ensemble`` (training, calibration, save/load: :class:`EnsembleSurrogate`), ``base`` (the interface).
"""

from __future__ import annotations

from aso_workflows.surrogate.base import Surrogate
from aso_workflows.surrogate.ensemble import EnsembleSurrogate, SurrogateSettings
from aso_workflows.surrogate.neighbors import NeighborList, periodic_neighbor_list

__all__ = ["Surrogate", "EnsembleSurrogate", "SurrogateSettings", "NeighborList", "periodic_neighbor_list"]
