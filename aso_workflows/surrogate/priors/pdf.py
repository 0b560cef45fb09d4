"""The PDF prior: pdffit2's G(r) in torch (:class:`~aso_workflows.surrogate.priors.pdf_model.PDFModel`)
on the surrogate's grid, and its check against the engine on evaluated structures."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.surrogate.priors.base import PhysicsPrior
from aso_workflows.surrogate.priors.pdf_model import PDFModel

__all__ = ["PDFPrior", "TOLERANCE", "engine_check"]

#: largest ``max |G_torch − G_pdffit2| / max |G_pdffit2|`` accepted by :func:`engine_check`
TOLERANCE = 1e-6


def _simulator(settings: dict[str, Any]) -> Any:
    from aso_workflows.spectra.pdf import PDFSimulator

    known = {k: v for k, v in settings.items() if k != "technique"}
    return PDFSimulator(**known)


class PDFPrior(PhysicsPrior):
    """pdffit2's G(r) of a candidate, in torch, on the surrogate's grid.

    Parameters
    ----------
    settings
        The PDF simulator's settings (``PDFSimulator.settings_dict()``: grid, Qmax, Qdamp, Qbroad, Biso,
        delta1/delta2, radiation; engine pdffit2).
    species
        Element of every site, in the campaign's site order.
    grid
        The surrogate's r grid (the target's). If it is not the simulator's, G(r) is interpolated
        linearly onto it, as the campaign puts simulated spectra on a target's grid.

    Raises
    ------
    InputError
        If the engine is not pdffit2 (the model reproduces pdffit2 only) or an element has no
        scattering factor.
    """

    kind: ClassVar[str] = "pdf"

    def __init__(self, settings: dict[str, Any], species: list[str], grid: list[float] | np.ndarray):
        self.settings = dict(settings)
        sim = _simulator(self.settings)
        self.species = [str(s) for s in species]
        self.model = PDFModel(sim, self.species)
        self.grid = np.asarray(grid, dtype=float)
        self.output_dim = len(self.grid)
        r = sim.r()
        self._interp: torch.Tensor | None = None
        if len(r) != len(self.grid) or np.max(np.abs(r - self.grid)) > 1e-9:
            if self.grid[0] < r[0] - 1e-9 or self.grid[-1] > r[-1] + 1e-9:
                raise InputError(
                    "grid",
                    f"the target's r range [{self.grid[0]:g}, {self.grid[-1]:g}] Å lies outside the "
                    f"simulator's [{r[0]:g}, {r[-1]:g}] Å",
                )
            eye = np.eye(len(r))
            self._interp = torch.tensor(np.stack([np.interp(self.grid, r, row) for row in eye]))  # [m, M]

    def _on_grid(self, g: torch.Tensor) -> torch.Tensor:
        if self._interp is None:
            return g
        return g @ self._interp.to(g.device, g.dtype)

    def predict_torch(self, positions: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor:
        return self._on_grid(self.model(positions, lattice))

    def rows_torch(self, positions: torch.Tensor, lattice: torch.Tensor) -> torch.Tensor | None:
        return self._on_grid(self.model(positions, lattice, rows=True))

    def state(self) -> dict[str, Any]:
        return {"settings": self.settings, "species": self.species, "grid": self.grid.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PDFPrior:
        return cls(state["settings"], state["species"], state["grid"])


def engine_check(settings: dict[str, Any], structure: Structure, values: list[float] | np.ndarray) -> dict:
    """The torch model's G(r) of ``structure`` against the engine's ``values`` (float64).

    Returns ``{"max_rel_error": max |ΔG| / max |G|, "ok": error ≤ TOLERANCE, "seconds": ...}``: what
    the campaign stores with each PDF evaluation when the prior is used (a mismatch is reported, never
    hidden or corrected).
    """
    import time

    t0 = time.perf_counter()
    sim = _simulator(settings)
    prior = PDFPrior(settings, [site.specie.symbol for site in structure], sim.r())
    g = np.asarray(values, dtype=float)
    err = float(np.max(np.abs(prior.predict([structure])[0] - g)) / max(float(np.max(np.abs(g))), 1e-300))
    return {"max_rel_error": err, "ok": bool(err <= TOLERANCE), "seconds": round(time.perf_counter() - t0, 4)}
