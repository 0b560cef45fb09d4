"""PDF nuisance fit: scale in closed form; Qdamp, Qbroad, delta1/2 and per-element Biso by bounded search.

Every parameter but ``scale`` changes the shape of G(r), so each trial value is a new simulation of
the candidate with :meth:`PDFSimulator.with_settings` (the same engine object, no new pdffit2
instance). The goodness is PDFgui's Rw over the simulator's r range, weighted by 1/dG² when
``weights: dG``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.spectra.fit.base import FitResult, NuisanceFitter, profile_fit
from aso_workflows.spectra.fit.spec import FitSpec
from aso_workflows.spectra.goodness import rw
from aso_workflows.spectra.pdf import PDFSimulator, biso_to_uiso, uiso_to_biso
from aso_workflows.spectra.spectrum import Spectrum

__all__ = ["PDFFitter", "PDF_BOUNDS"]

PDF_BOUNDS: dict[str, tuple[float, float]] = {
    "qdamp": (0.0, 0.3),
    "qbroad": (0.0, 0.3),
    "delta1": (0.0, 5.0),
    "delta2": (0.0, 20.0),
    "biso": (0.01, 10.0),
    "uiso": (biso_to_uiso(0.01), biso_to_uiso(10.0)),
}
"""Default bounds (Å⁻¹ for Qdamp/Qbroad, Å and Å² for delta1/delta2, Å² for Biso/Uiso)."""

_SETTINGS = ("qdamp", "qbroad", "delta1", "delta2")
QUADRATIC_START = 0.02
"""Qdamp and Qbroad enter G(r) squared: their derivative vanishes at 0, so a fit started there never
moves. A refined Qdamp or Qbroad set below this value (Å⁻¹) starts here instead."""


class PDFFitter(NuisanceFitter[PDFSimulator]):
    """Fits scale, instrument resolution and thermal parameters of a candidate's G(r).

    ``biso``/``uiso`` in ``fit.refine`` mean one value per element of the structure (named
    ``biso_Ni``, ``biso_O`` ... in the result); ``biso_Ni`` refines that element only. Every fit starts
    from the target's settings (Qdamp/Qbroad from at least :data:`QUADRATIC_START`): the problem can
    have several minima (Qdamp, Uiso and delta2 all broaden peaks), so start values close to the
    instrument's and the material's help.
    """

    technique = "pdf"
    LINEAR = "scale"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"weights", "bounds", "max_nfev"})

    def parameter_names(self) -> list[str]:
        return ["scale", *_SETTINGS, "biso", "uiso"]

    def _element_form(self, name: str) -> bool:
        kind, _, element = name.partition("_")
        return kind in ("biso", "uiso") and bool(element)

    def __init__(self, spec: FitSpec, target: Spectrum, simulator: PDFSimulator) -> None:
        super().__init__(spec, target, simulator)
        if "biso" in spec.refine and "uiso" in spec.refine:
            raise InputError(
                "fit.refine", "lists both biso and uiso; they are the same parameter in two units"
            )
        if self.spec.weights == "dG":
            dy = np.asarray(self.target.extra["dy"], dtype=float)
            if np.any(dy <= 0):
                raise InputError(
                    "fit.weights", "the target's dG column has values ≤ 0; it cannot weight the fit"
                )
            w = 1.0 / dy**2
            self._weights = w / w.mean()
        else:
            self._weights = np.ones(len(self.target.values))

    def point_weights(self) -> np.ndarray:
        return self._weights

    def _site_rows(self, spectrum: Spectrum, structure: Structure | None, changes: dict) -> np.ndarray:
        """The per-atom rows G_i(r) at the fitted settings, on the target grid.

        Scale alone: the simulation's rows. Anything else changes the rows' shape: they are computed
        again at the fitted settings (:mod:`~aso_workflows.spectra.pdf_partials`; N + one pdffit2
        calculation per element), so that their mean stays the fitted G(r) / scale exactly.
        """
        if not changes:
            rows = np.asarray(spectrum.site_values, dtype=float)
            x = spectrum.x
        else:
            from aso_workflows.spectra.pdf_partials import pdf_site_contributions

            assert structure is not None, "fit() refuses refined settings without the structure"
            sim = self.simulator.with_settings(**changes)
            rows = pdf_site_contributions(sim, structure).rows
            x = sim.r()
        if len(x) == len(self.target.x) and np.allclose(x, self.target.x, rtol=1e-9, atol=1e-12):
            return rows
        return np.array([np.interp(self.target.x, x, row) for row in rows])

    # -- parameters ---------------------------------------------------------------------------
    def _thermal(self, structure: Structure | None) -> list[tuple[str, str, str]]:
        """``(result name, unit 'biso'|'uiso', element)`` of every refined displacement parameter."""
        out = []
        for name in self.spec.refine:
            kind, _, element = name.partition("_")
            if kind not in ("biso", "uiso"):
                continue
            if element:
                out.append((f"{kind}_{element.capitalize()}", kind, element.capitalize()))
                continue
            if structure is None:
                raise InputError("fit.refine", f"{name} needs the candidate structure")
            for el in sorted({site.specie.symbol for site in structure}):
                out.append((f"{kind}_{el}", kind, el))
        return out

    def _start_biso(self, element: str) -> float:
        biso = self.simulator.biso
        if isinstance(biso, dict):
            if element not in biso:
                raise InputError("fit.refine", f"biso_{element}: the settings give no Biso for {element}")
            return float(biso[element])
        return float(biso)

    def fit(
        self, spectrum: Spectrum, structure: Structure | None = None, fixed: Mapping[str, float] | None = None
    ) -> FitResult:
        self.check_fixed(fixed)
        spectrum = self.on_target_grid(spectrum)
        data = self.target.y
        w = self._weights
        scale = "scale" in self.spec.refine
        settings = [n for n in _SETTINGS if n in self.spec.refine]
        thermal = self._thermal(structure)
        names = settings + [t[0] for t in thermal]
        if names and structure is None:
            raise InputError("fit.refine", f"{names} change G(r) and need the candidate structure")
        x0, bounds = [], []
        for n in settings:
            v = float(getattr(self.simulator, n))
            x0.append(max(v, QUADRATIC_START) if n in ("qdamp", "qbroad") else v)
            bounds.append(self.bounds_of(n, PDF_BOUNDS[n]))
        for full, unit, el in thermal:
            b0 = self._start_biso(el)
            x0.append(b0 if unit == "biso" else float(biso_to_uiso(b0)))
            bounds.append(self.bounds_of(full, self.bounds_of(unit, PDF_BOUNDS[unit])))
        base_biso = self.simulator.biso
        elements = sorted({site.specie.symbol for site in structure}) if structure is not None else []

        def settings_for(x: np.ndarray) -> dict[str, float | dict[str, float]]:
            changes: dict[str, float | dict[str, float]] = {
                n: float(v) for n, v in zip(settings, x[: len(settings)], strict=True)
            }
            if thermal:
                biso = dict(base_biso) if isinstance(base_biso, dict) else dict.fromkeys(elements, base_biso)
                for (_, unit, el), v in zip(thermal, x[len(settings) :], strict=True):
                    biso[el] = float(v) if unit == "biso" else float(uiso_to_biso(float(v)))
                changes["biso"] = biso
            return changes

        start = np.array(x0, dtype=float)
        calls = [0]

        def model(x: np.ndarray) -> np.ndarray:
            if np.array_equal(x, start):
                return spectrum.y  # the candidate was simulated at the start values
            # x differs from the (empty) start only when parameters are refined: then a structure was given
            assert structure is not None
            calls[0] += 1
            sim = self.simulator.with_settings(**settings_for(x))
            return self.on_target_grid(sim.simulate(structure)).y

        res = profile_fit(model, data, w, x0, bounds, scale=scale, max_nfev=self.spec.max_nfev)
        values = res.scale * res.model
        params: dict[str, float] = {}
        if scale:
            params["scale"] = res.scale
        params.update({n: float(v) for n, v in zip(names, res.values, strict=True)})
        fitted_settings = (
            {**spectrum.settings, **settings_for(res.values)} if names else dict(spectrum.settings)
        )
        update = {
            "values": values.tolist(),
            "settings": fitted_settings,
            "extra": {**spectrum.extra, "nuisance_fit": params},
        }
        if spectrum.site_values is not None:  # per-atom rows (node-level surrogate): fitted alike
            rows = self._site_rows(spectrum, structure, settings_for(res.values) if names else {})
            update["site_values"] = (res.scale * rows).tolist()
        fitted = spectrum.model_copy(update=update)
        return FitResult(
            technique="pdf",
            parameters=params,
            goodness_name="Rw",
            goodness=rw(data, values, w),
            mse=self.weighted_mse(values),
            n_simulations=calls[0],
            status="fixed" if not self.spec.refine else ("converged" if res.converged else "stopped"),
            spectrum=fitted,
        )
