"""PDF nuisance fit: scale in closed form; Qdamp, Qbroad, delta1/2, per-element Biso and the cell
expansion by bounded search.

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

__all__ = ["EXPANSION", "PDFFitter", "PDF_BOUNDS", "expanded"]

PDF_BOUNDS: dict[str, tuple[float, float]] = {
    "qdamp": (0.0, 0.3),
    "qbroad": (0.0, 0.3),
    "delta1": (0.0, 5.0),
    "delta2": (0.0, 20.0),
    "biso": (0.01, 10.0),
    "uiso": (biso_to_uiso(0.01), biso_to_uiso(10.0)),
    "expansion": (-0.1, 0.1),
}
"""Default bounds (Å⁻¹ for Qdamp/Qbroad, Å and Å² for delta1/delta2, Å² for Biso/Uiso)."""

_SETTINGS = ("qdamp", "qbroad", "delta1", "delta2")
EXPANSION = "expansion"
"""The isotropic cell expansion α (lengths × (1 + α), fractional coordinates kept): the parameter a
joint campaign shares across techniques (the same name and meaning in the EXAFS fit)."""


def expanded(structure: Structure, alpha: float) -> Structure:
    """``structure`` with every length × (1 + α): the lattice scaled, fractional coordinates kept."""
    if alpha == 0.0:
        return structure
    out = structure.copy()
    out.scale_lattice(structure.volume * (1.0 + alpha) ** 3)
    return out


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
        return ["scale", *_SETTINGS, "biso", "uiso", EXPANSION]

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

    def _site_rows(self, spectrum: Spectrum, structure: Structure | None, changes: dict | None) -> np.ndarray:
        """The per-atom rows G_i(r) at the fitted settings, on the target grid.

        Scale alone (``changes`` None): the simulation's rows. Anything else (settings or the cell
        expansion, applied to ``structure``) changes the rows' shape: they are computed again at the
        fitted settings (:mod:`~aso_workflows.spectra.pdf_partials`; N + one pdffit2
        calculation per element), so that their mean stays the fitted G(r) / scale exactly.
        """
        if changes is None:
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
        self,
        spectrum: Spectrum,
        structure: Structure | None = None,
        fixed: Mapping[str, float] | None = None,
    ) -> FitResult:
        """Fit the candidate's ``spectrum`` (see :meth:`NuisanceFitter.fit`).

        ``fixed`` holds some refined parameters at given values for this fit (a joint campaign fits
        its shared ``expansion`` once for every technique and passes it here); they are reported with
        the fitted ones.
        """
        spectrum = self.on_target_grid(spectrum)
        data = self.target.y
        w = self._weights
        fixed = {k: float(v) for k, v in (fixed or {}).items()}
        scale = "scale" in self.spec.refine
        settings = [n for n in _SETTINGS if n in self.spec.refine]
        thermal = self._thermal(structure)
        every = settings + [t[0] for t in thermal] + ([EXPANSION] if EXPANSION in self.spec.refine else [])
        unknown = sorted(set(fixed) - set(every))
        if unknown:
            raise InputError("fit", f"cannot hold {unknown} fixed: not refined here (refined: {every})")
        if every and structure is None:
            raise InputError("fit.refine", f"{every} change G(r) and need the candidate structure")
        x_all, bounds_all = [], []
        for n in settings:
            v = float(getattr(self.simulator, n))
            x_all.append(max(v, QUADRATIC_START) if n in ("qdamp", "qbroad") else v)
            bounds_all.append(self.bounds_of(n, PDF_BOUNDS[n]))
        for name, unit, el in thermal:
            b0 = self._start_biso(el)
            x_all.append(b0 if unit == "biso" else float(biso_to_uiso(b0)))
            bounds_all.append(self.bounds_of(name, self.bounds_of(unit, PDF_BOUNDS[unit])))
        if EXPANSION in every:
            x_all.append(0.0)
            bounds_all.append(self.bounds_of(EXPANSION, PDF_BOUNDS[EXPANSION]))
        free = [k for k, n in enumerate(every) if n not in fixed]
        names = [every[k] for k in free]
        base_biso = self.simulator.biso
        elements = sorted({site.specie.symbol for site in structure}) if structure is not None else []

        def full(x: np.ndarray) -> dict[str, float]:
            out = {n: fixed.get(n, v) for n, v in zip(every, x_all, strict=True)}
            out.update({names[i]: float(v) for i, v in enumerate(x)})
            return out

        def settings_for(values: dict[str, float]) -> dict[str, float | dict[str, float]]:
            changes: dict[str, float | dict[str, float]] = {n: values[n] for n in settings}
            if thermal:
                biso = dict(base_biso) if isinstance(base_biso, dict) else dict.fromkeys(elements, base_biso)
                for name, unit, el in thermal:
                    v = values[name]
                    biso[el] = v if unit == "biso" else float(uiso_to_biso(v))
                changes["biso"] = biso
            return changes

        start = np.array([x_all[k] for k in free], dtype=float)
        calls = [0]
        untouched = not fixed

        def model(x: np.ndarray) -> np.ndarray:
            if untouched and np.array_equal(x, start):
                return spectrum.y  # the candidate was simulated at the start values
            # parameters are refined or held: then a structure was given (checked above)
            assert structure is not None
            calls[0] += 1
            values = full(x)
            sim = self.simulator.with_settings(**settings_for(values))
            return self.on_target_grid(sim.simulate(expanded(structure, values.get(EXPANSION, 0.0)))).y

        x0, bounds = list(start), [bounds_all[k] for k in free]
        res = profile_fit(model, data, w, x0, bounds, scale=scale, max_nfev=self.spec.max_nfev)
        values = res.scale * res.model
        params: dict[str, float] = {}
        if scale:
            params["scale"] = res.scale
        final = full(res.values)
        params.update(final)
        fitted_settings = {**spectrum.settings, **settings_for(final)} if every else dict(spectrum.settings)
        update = {
            "values": values.tolist(),
            "settings": fitted_settings,
            "extra": {**spectrum.extra, "nuisance_fit": params},
        }
        if spectrum.site_values is not None:  # per-atom rows (node-level surrogate): fitted alike
            rows = self._site_rows(
                spectrum,
                expanded(structure, final.get(EXPANSION, 0.0)) if structure is not None else None,
                settings_for(final) if every else None,
            )
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
