"""The ``Spectrum`` document: what a simulator produces and what a target file holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import field_validator

from aso_workflows.errors import InputError
from aso_workflows.schemas import Grid, SpectrumData
from aso_workflows.spectra.techniques import registered

__all__ = ["Grid", "Spectrum", "same_grid", "on_target_grid"]


class Spectrum(SpectrumData):
    """One spectrum on one grid, with provenance: the stored
    :class:`~aso_workflows.schemas.SpectrumData` with its technique checked against the registry.

    For XAS ``values`` is the average over the absorber sites that were computed; the per-site spectra
    are kept in ``site_values`` (same order as ``absorber_sites``) because the surrogate learns them at
    node level.

    Attributes
    ----------
    technique
        A registered technique (:mod:`~aso_workflows.spectra.techniques`): ``"pdf"``, ``"exafs"``,
        ``"xanes"`` ...
    grid
        The abscissa.
    values
        The ordinate: G(r) for PDF, k^w·χ(k) for EXAFS, normalised μ(E) for XANES.
    absorber, edge
        Absorbing element and edge for XAS (``None`` for PDF).
    absorber_sites
        Site indices (in the simulated structure) whose spectra were averaged.
    site_values
        Per-site spectra, same grid.
    settings
        The simulator settings that made it (for a target read from a file: how it was read).
    engine
        Name and version of the code that made it, e.g. ``"diffpy.pdffit2 1.5.0"``, ``"feff10-rs 0.2.4"``.
    extra
        Derived data worth keeping, e.g. ``{"r": [...], "chir_mag": [...]}`` for EXAFS, ``{"e0": 8333.}``.
    """

    @field_validator("technique")
    @classmethod
    def _registered(cls, v: str) -> str:
        return registered(v)

    # ---- convenience -------------------------------------------------------------------------
    @property
    def x(self) -> np.ndarray:
        return self.grid.array

    @property
    def y(self) -> np.ndarray:
        return np.asarray(self.values, dtype=float)

    def interpolate(self, grid: Grid) -> Spectrum:
        """This spectrum linearly interpolated onto ``grid`` (which must lie inside this one's range)."""
        x = self.x
        g = grid.array
        if g[0] < x[0] - 1e-9 or g[-1] > x[-1] + 1e-9:
            raise ValueError(
                f"grid {grid.name} [{g[0]:g}, {g[-1]:g}] is outside the spectrum's range [{x[0]:g}, {x[-1]:g}]"
            )
        y = np.interp(g, x, self.y)
        return self.model_copy(update={"grid": grid, "values": y.tolist(), "site_values": None})

    # ---- MSON round trip (monty), so jobflow can pass Spectrum objects between jobs ----------
    def as_dict(self) -> dict:
        d = self.model_dump(mode="json")
        d["@module"] = type(self).__module__
        d["@class"] = type(self).__name__
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Spectrum:
        d = {k: v for k, v in d.items() if not k.startswith("@")}
        return cls.model_validate(d)

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=1))

    @classmethod
    def from_json_file(cls, path: str | Path) -> Spectrum:
        return cls.model_validate_json(Path(path).read_text())


def same_grid(a: Grid, b: Grid) -> bool:
    """True if both grids have the same points (to 1e-9 relative): no interpolation needed."""
    x, y = a.array, b.array
    if x.shape != y.shape:
        return False
    return bool(np.allclose(x, y, rtol=1e-9, atol=1e-12))


def on_target_grid(spectrum: Spectrum, grid: Grid) -> Spectrum:
    """``spectrum`` on ``grid`` (unchanged when the grids are the same, else linearly interpolated).

    Raises
    ------
    InputError
        On ``<technique> spectrum`` when ``grid`` reaches outside the spectrum's range.
    """
    if same_grid(spectrum.grid, grid):
        return spectrum
    try:
        return spectrum.interpolate(grid)
    except ValueError as exc:
        raise InputError(f"{spectrum.technique} spectrum", str(exc)) from None
