"""The physics-prior interface: a cheap, differentiable model of a technique's simulator.

A prior maps structures of one campaign (fixed species and site order) to the spectrum on the
surrogate's grid, vectorised over a batch and differentiable in positions and lattice, like the GNN
ensemble's ``predict_torch``. :class:`~aso_workflows.surrogate.residual.PriorResidualSurrogate` adds
the GNN ensemble trained on what the prior misses. A prior is rebuilt from a small JSON-able state
(stored with the surrogate), never pickled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Spectrum

__all__ = ["PhysicsPrior"]

#: structures per call when a prior predicts outside the proposal loop
_CHUNK = 32


class PhysicsPrior(ABC):
    """A differentiable physics model of one technique's spectrum.

    Attributes
    ----------
    kind
        Registry name (``"pdf"``: the pdffit2 model).
    species
        Element of every site, in the campaign's site order.
    output_dim
        Points of the surrogate's grid.
    """

    kind: ClassVar[str]
    species: list[str]
    output_dim: int

    @abstractmethod
    def predict_torch(self, positions: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        """The spectrum ``[B, M]`` from Cartesian ``positions [B, N, 3]`` and ``lattice [B, 3, 3]`` (rows,
        Å), in their dtype, differentiable in both."""

    def rows_torch(self, positions: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor | None:
        """Per-site rows ``[B, A, M]`` whose mean is the spectrum (the node-level rows of the
        simulator), or ``None`` if the prior has none."""
        return None

    def prepare(
        self, structures: Sequence[Structure], spectra: Sequence[Spectrum], objectives: Sequence[float] | None
    ) -> None:
        """Adapt to the training data before predicting (the EXAFS prior takes its reference structure
        and paths from it); ``objectives`` are the structures' mismatches when known. Default: nothing."""
        return None

    def summary(self) -> dict[str, Any]:
        """JSON-able facts for the model's metrics (EXAFS: which structure the paths come from)."""
        return {}

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-able settings from which :meth:`from_state` rebuilds this prior."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict[str, Any]) -> PhysicsPrior:
        """The prior described by :meth:`state`."""

    def tensors(self, structures: Sequence[Structure]) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 positions ``[n, N, 3]`` and lattices ``[n, 3, 3]`` (site order checked)."""
        for k, st in enumerate(structures):
            if [site.specie.symbol for site in st] != self.species:
                raise InputError(
                    f"structures[{k}]",
                    "species/site order differs from the prior's (campaign order expected)",
                )
        pos = torch.tensor(np.stack([st.cart_coords for st in structures]), dtype=torch.float64)
        lat = torch.tensor(np.stack([st.lattice.matrix for st in structures]), dtype=torch.float64)
        return pos, lat

    @torch.no_grad()
    def predict(self, structures: Sequence[Structure]) -> np.ndarray:
        """The spectra ``[n, M]`` of ``structures`` in float64."""
        pos, lat = self.tensors(structures)
        out = [
            self.predict_torch(pos[c : c + _CHUNK], lat[c : c + _CHUNK]) for c in range(0, len(pos), _CHUNK)
        ]
        return torch.cat(out).numpy()

    @torch.no_grad()
    def rows(self, structures: Sequence[Structure]) -> np.ndarray | None:
        """Per-site rows ``[n, A, M]`` in float64, or ``None`` (see :meth:`rows_torch`)."""
        pos, lat = self.tensors(structures)
        out = []
        for c in range(0, len(pos), _CHUNK):
            r = self.rows_torch(pos[c : c + _CHUNK], lat[c : c + _CHUNK])
            if r is None:
                return None
            out.append(r)
        return torch.cat(out).numpy()
