"""Surrogate models: structure (fixed composition) → spectrum with a calibrated uncertainty.

``settings`` (:class:`SurrogateSettings`, imports no torch), ``neighbors`` (batched periodic neighbour
list in torch, and the skin list a search keeps), ``graph`` (radial bases and the model's input built from
a list), ``model`` (the stacked GNN ensemble), ``targets``, ``training``, ``calibration`` and
``persistence`` (the parts of fitting and storing one), ``ensemble`` (:class:`EnsembleSurrogate`, which
ties them together), ``factory`` (the campaign's surrogate of one technique: level, readout range),
``base`` (the interface). See ``docs/surrogate.md``.

Importing this package imports no torch; the torch-based names are loaded on first use, so a campaign
file can be read (``from aso_workflows.surrogate.settings import SurrogateSettings``) without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aso_workflows.surrogate.settings import SurrogateSettings

if TYPE_CHECKING:
    from aso_workflows.surrogate.base import Surrogate
    from aso_workflows.surrogate.ensemble import EnsembleSurrogate
    from aso_workflows.surrogate.neighbors import NeighborList, SkinNeighborList, periodic_neighbor_list

__all__ = [
    "Surrogate",
    "EnsembleSurrogate",
    "SurrogateSettings",
    "NeighborList",
    "SkinNeighborList",
    "periodic_neighbor_list",
]

_LAZY = {
    "Surrogate": "aso_workflows.surrogate.base",
    "EnsembleSurrogate": "aso_workflows.surrogate.ensemble",
    "NeighborList": "aso_workflows.surrogate.neighbors",
    "SkinNeighborList": "aso_workflows.surrogate.neighbors",
    "periodic_neighbor_list": "aso_workflows.surrogate.neighbors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
