"""The surrogate interface: structures of one campaign (fixed species and site order) → spectra.

Implementations: :class:`~aso_workflows.surrogate.ensemble.EnsembleSurrogate` (GNN ensemble). A Gaussian
process or any other model plugs in by implementing these five methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import torch
from pymatgen.core import Structure

from aso_workflows.spectra.spectrum import Spectrum

__all__ = ["Surrogate"]


class Surrogate(ABC):
    """Predicts a spectrum ``[M]`` (mean and calibrated standard deviation) from a structure.

    All structures given to one surrogate have the same species in the same site order (a campaign
    changes positions and possibly the lattice, never the composition).
    """

    output_dim: int

    @abstractmethod
    def fit(self, structures: Sequence[Structure], spectra: Sequence[Spectrum]) -> dict[str, Any]:
        """Train on simulated spectra; returns metrics (JSON-able numbers and lists)."""

    @abstractmethod
    def predict(self, structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [n, M], std [n, M])`` in the units of the training spectra."""

    @abstractmethod
    def predict_torch(
        self, positions: torch.Tensor, lattice: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable ``(mean [B, M], std [B, M])`` from Cartesian ``positions [B, N, 3]`` and
        ``lattice [B, 3, 3]`` (rows), both in Å, vectorised over the batch."""

    @abstractmethod
    def save(self, path: str | IO[bytes]) -> None:
        """Write everything needed to predict again to one file (or binary stream)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | IO[bytes], device: str | None = None) -> Surrogate:
        """Read what :meth:`save` wrote."""
