"""XANES nuisance fit: an energy shift (bounded 1-D search) and the edge-step amplitude (closed form).

Both spectra are flattened, edge-step normalised μ(E) on energies relative to their E0 (the
simulator's from FEFF, the target's from its file or xraylarch's ``pre_edge``),
and the two E0 conventions differ by a few eV: the shift absorbs that, the amplitude a residual
normalisation difference. The model is ``a · μ_sim(e − shift)``; the fit range defaults to the target
grid less the shift bounds at each end, so every fitted point is interpolated, never extrapolated.
Points outside the range get zero weight in the fit, the objective and R; in the stored fitted
spectrum they hold the simulation's end values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.spectra.base import Simulator
from aso_workflows.spectra.fit.base import FitResult, NuisanceFitter, profile_fit
from aso_workflows.spectra.fit.spec import FitSpec
from aso_workflows.spectra.goodness import r_factor
from aso_workflows.spectra.spectrum import Spectrum

__all__ = ["XANESFitter", "XANES_BOUNDS"]

XANES_BOUNDS: dict[str, tuple[float, float]] = {"shift": (-20.0, 20.0)}
"""Default bound of the energy shift (eV)."""


class XANESFitter(NuisanceFitter[Simulator]):
    """Fits an energy shift and the edge-step amplitude of a candidate's normalised μ(E)."""

    technique = "xanes"
    LINEAR = "amplitude"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"bounds", "max_nfev", "emin", "emax"})

    def parameter_names(self) -> list[str]:
        return ["amplitude", "shift"]

    def __init__(self, spec: FitSpec, target: Spectrum, simulator: Simulator) -> None:
        super().__init__(spec, target, simulator)
        e = self.target.x
        lo, hi = self.bounds_of("shift", XANES_BOUNDS["shift"]) if "shift" in spec.refine else (0.0, 0.0)
        margin = max(abs(lo), abs(hi))
        self.emin = spec.emin if spec.emin is not None else float(e[0]) + margin
        self.emax = spec.emax if spec.emax is not None else float(e[-1]) - margin
        if self.emin < e[0] + margin - 1e-9 or self.emax > e[-1] - margin + 1e-9 or self.emax <= self.emin:
            raise InputError(
                "fit.emin",
                f"the fit range [{self.emin:g}, {self.emax:g}] eV must lie inside the grid [{e[0]:g}, {e[-1]:g}] eV "
                f"less the shift bounds ({margin:g} eV) at each end",
            )
        self._weights = ((e >= self.emin - 1e-9) & (e <= self.emax + 1e-9)).astype(float)
        if self._weights.sum() < 3:
            raise InputError("fit.emin", f"[{self.emin:g}, {self.emax:g}] eV holds fewer than 3 grid points")

    def point_weights(self) -> np.ndarray:
        return self._weights

    def fit(
        self, spectrum: Spectrum, structure: Structure | None = None, fixed: Mapping[str, float] | None = None
    ) -> FitResult:
        self.check_fixed(fixed)
        e = self.target.x
        src_e, src_y = (
            spectrum.x,
            spectrum.y,
        )  # the simulation's own grid: shifting needs no re-gridding first
        names = ["shift"] if "shift" in self.spec.refine else []
        bounds = [self.bounds_of("shift", XANES_BOUNDS["shift"])] if names else []

        def model(x: np.ndarray) -> np.ndarray:
            shift = float(x[0]) if names else 0.0
            return np.interp(e - shift, src_e, src_y)

        scale = "amplitude" in self.spec.refine
        res = profile_fit(
            model, self.target.y, self._weights, [0.0] * len(names), bounds, scale, self.spec.max_nfev
        )
        values = res.scale * res.model
        params: dict[str, float] = {}
        if scale:
            params["amplitude"] = res.scale
        if names:
            params["shift"] = float(res.values[0])
        update: dict = {"grid": self.target.grid, "values": values.tolist()}
        if spectrum.site_values is not None:
            shift = params.get("shift", 0.0)
            update["site_values"] = [
                (res.scale * np.interp(e - shift, src_e, np.asarray(s, dtype=float))).tolist()
                for s in spectrum.site_values
            ]
        update["extra"] = {**spectrum.extra, "nuisance_fit": params}
        w = self._weights > 0
        return FitResult(
            technique="xanes",
            parameters=params,
            goodness_name="R",
            goodness=r_factor(self.target.y[w], values[w]),
            mse=self.weighted_mse(values),
            n_simulations=0,
            status="fixed" if not self.spec.refine else ("converged" if res.converged else "stopped"),
            spectrum=spectrum.model_copy(update=update),
        )
