"""PDF nuisance fit: PDFgui's parameters of a candidate, refined by pdffit2 (exact derivatives).

``scale`` alone is solved in closed form (no new calculation, no structure needed). Anything else —
Qdamp, Qbroad, delta1/delta2, the nanoparticle diameter, the cell (``expansion``, ``abc``,
``lattice``), ADPs per element, per site or anisotropic — is refined together with the scale by
pdffit2's Levenberg–Marquardt on the candidate's structure
(:class:`~aso_workflows.spectra.fit.pdffit.PdfFitProblem`), each parameter within bounds and with the
uncertainty pdffit2 derives from the covariance (what PDFgui shows). Sites and ties come from the
``symmetry`` of the fit (``start``: the start structure's space group; a symbol: that subgroup), so a
cubic cell refines one ``a`` and the four oxygens of a Wyckoff site one Uiso. The positions stay the
candidate's: they are the structure search's (the polish refines them, :mod:`aso_workflows.optimizers.polish`).

The goodness is PDFgui's Rw over the simulator's r range, weighted by 1/dG² when ``weights: dG``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.schemas import StructureDoc
from aso_workflows.spectra.fit.base import FitResult, NuisanceFitter, linear_scale
from aso_workflows.spectra.fit.pdffit import NUISANCE, PDF_BOUNDS, QUADRATIC_START, PdfFitProblem, Plan
from aso_workflows.spectra.fit.spec import FitSpec
from aso_workflows.spectra.goodness import rw
from aso_workflows.spectra.pdf import PDFSimulator
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.symmetry import SymmetryConstraints, symmetry_constraints

__all__ = ["EXPANSION", "PDFFitter", "PDF_BOUNDS", "QUADRATIC_START", "expanded"]

EXPANSION = "expansion"
"""The isotropic cell expansion α (lengths × (1 + α), fractional coordinates kept): the parameter a
joint campaign shares across techniques (the same name and meaning in the EXAFS fit)."""

_CELL = (EXPANSION, "abc", "lattice")
_ADP = ("biso", "uiso", "biso_site", "uiso_site", "uaniso")


def expanded(structure: Structure, alpha: float) -> Structure:
    """``structure`` with every length × (1 + α): the lattice scaled, fractional coordinates kept."""
    if alpha == 0.0:
        return structure
    out = structure.copy()
    out.scale_lattice(structure.volume * (1.0 + alpha) ** 3)
    return out


class PDFFitter(NuisanceFitter[PDFSimulator]):
    """Fits scale, instrument, thermal, nanoparticle and cell parameters of a candidate's G(r).

    ``biso``/``uiso`` mean one value per element (``biso_Ni`` ... in the result), ``biso_Ni`` that
    element only, ``uiso_site`` one per site, ``uaniso`` anisotropic Uij per site. Every fit starts
    from the target's settings (Qdamp/Qbroad from at least :data:`QUADRATIC_START`, the scale from its
    closed form), or from ``start`` values given to :meth:`fit` (the polish passes its own).

    Parameters
    ----------
    spec, target, simulator
        As :class:`~aso_workflows.spectra.fit.base.NuisanceFitter`.
    reference
        The campaign's start structure: the ``symmetry`` of the fit is taken from it (every candidate
        has its species in its order).
    """

    technique = "pdf"
    LINEAR = "scale"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"weights", "bounds", "max_nfev", "symmetry"})
    SHARED: ClassVar[frozenset[str]] = frozenset({EXPANSION})

    def parameter_names(self) -> list[str]:
        return [*NUISANCE, *_ADP, *_CELL]

    def _element_form(self, name: str) -> bool:
        kind, _, element = name.partition("_")
        return kind in ("biso", "uiso") and bool(element) and element != "site"

    def __init__(
        self, spec: FitSpec, target: Spectrum, simulator: PDFSimulator, reference: Structure | None = None
    ) -> None:
        super().__init__(spec, target, simulator)
        self.plan = Plan.from_names(list(spec.refine))
        self.reference = reference
        if self.spec.weights == "dG":
            dy = np.asarray(self.target.extra["dy"], dtype=float)
            if np.any(dy <= 0):
                raise InputError(
                    "fit.weights", "the target's dG column has values ≤ 0; it cannot weight the fit"
                )
            w = 1.0 / dy**2
            self._weights = w / w.mean()
            self._dy: np.ndarray | None = dy
        else:
            self._weights = np.ones(len(self.target.values))
            self._dy = None
        if self.plan.structural and simulator.resolved_engine != "pdffit2":
            raise InputError(
                "fit.refine", f"{list(spec.refine)} are refined by pdffit2: use engine 'pdffit2'"
            )

    def point_weights(self) -> np.ndarray:
        return self._weights

    def symmetry_for(self, structure: Structure) -> SymmetryConstraints | None:
        """The sites and ties of the fit (``fit.symmetry`` of the reference, else of ``structure``)."""
        if self.spec.symmetry is None:
            return None
        base = self.reference if self.reference is not None else structure
        return _symmetry(base, None if self.spec.symmetry == "start" else self.spec.symmetry)

    def fit(
        self,
        spectrum: Spectrum,
        structure: Structure | None = None,
        fixed: Mapping[str, float] | None = None,
        start: Mapping[str, float] | None = None,
    ) -> FitResult:
        """Fit the candidate's ``spectrum`` (see :meth:`NuisanceFitter.fit`).

        ``fixed`` holds :attr:`SHARED` parameters at values fitted elsewhere (a joint campaign fits its
        ``expansion`` once for every technique and passes it here; not reported as this fit's);
        ``start`` starts others elsewhere than at the settings (the polish's refined values).
        """
        fixed = self.check_fixed(fixed)
        spectrum = self.on_target_grid(spectrum)
        if not self.plan.structural:
            if fixed:
                raise InputError("fit", f"cannot hold {sorted(fixed)} fixed: only the scale is refined here")
            return self._closed_form(spectrum)
        if structure is None:
            raise InputError(
                "fit.refine", f"{list(self.spec.refine)} change G(r) and need the candidate structure"
            )
        from aso_workflows.spectra.mismatch import same_grid

        if not same_grid(self.target.grid, self.simulator.grid()):
            raise InputError("fit", "a pdffit2 refinement needs the target on the simulator's r grid")
        first = {"scale": linear_scale(spectrum.y, self.target.y, self._weights) or 1.0}
        problem = PdfFitProblem(
            structure,
            self.simulator,
            self.target.y,
            self._dy,
            self.plan,
            symmetry=self.symmetry_for(structure),
            bounds=self.spec.bounds,
            start={**first, **(start or {})},
            fixed=dict(fixed or {}),
        )
        unknown = sorted(set(fixed or {}) - {p.name for p in problem.pars})
        if unknown:
            raise InputError(
                "fit", f"cannot hold {unknown} fixed: not refined here ({[p.name for p in problem.pars]})"
            )
        refined = problem.refine(self.spec.max_nfev)
        return self._refined_result(spectrum, refined)

    def _closed_form(self, spectrum: Spectrum) -> FitResult:
        data, w = self.target.y, self._weights
        scale = "scale" in self.spec.refine
        s = linear_scale(spectrum.y, data, w) if scale else 1.0
        values = s * spectrum.y
        params = {"scale": s} if scale else {}
        update: dict = {"values": values.tolist(), "extra": {**spectrum.extra, "nuisance_fit": params}}
        if spectrum.site_values is not None:
            update["site_values"] = (
                s * np.asarray(self._rows_on_grid(spectrum.x, spectrum.site_values))
            ).tolist()
        return FitResult(
            technique="pdf",
            parameters=params,
            goodness_name="Rw",
            goodness=rw(data, values, w),
            mse=self.weighted_mse(values),
            status="converged" if scale else "fixed",
            spectrum=spectrum.model_copy(update=update),
        )

    def _refined_result(self, spectrum: Spectrum, refined: object) -> FitResult:
        from aso_workflows.spectra.fit.pdffit import Refined

        assert isinstance(refined, Refined)
        values = refined.model
        params = {k: v for k, v in refined.values.items() if k not in refined.fixed}
        if "scale" not in self.spec.refine:
            params.pop("scale", None)
        update: dict = {
            "values": values.tolist(),
            "settings": {**spectrum.settings, **refined.settings},
            "extra": {**spectrum.extra, "nuisance_fit": params},
        }
        if spectrum.site_values is not None:  # per-atom rows (node-level surrogate): fitted alike
            from aso_workflows.spectra.pdf_partials import pdf_site_contributions

            sim = self.simulator.with_settings(**refined.settings)
            rows = pdf_site_contributions(sim, refined.structure).rows
            update["site_values"] = (refined.scale * self._rows_on_grid(sim.r(), rows)).tolist()
        cell_or_sites = self.plan.lattice is not None or self.plan.adp in ("site", "aniso")
        return FitResult(
            technique="pdf",
            parameters=params,
            uncertainties={k: v for k, v in refined.sigmas.items() if k in params},
            bounds={k: list(v) for k, v in refined.bounds.items() if k in params},
            at_bound=[k for k in refined.at_bound if k in params],
            goodness_name="Rw",
            goodness=rw(self.target.y, values, self._weights),
            mse=self.weighted_mse(values),
            n_simulations=refined.calls,
            status={"converged": "converged", "calls": "stopped"}.get(refined.status, refined.status),
            spectrum=spectrum.model_copy(update=update),
            structure=StructureDoc.from_pymatgen(refined.structure) if cell_or_sites else None,
        )

    def _rows_on_grid(self, x: np.ndarray, rows: object) -> np.ndarray:
        rows = np.asarray(rows, dtype=float)
        if len(x) == len(self.target.x) and np.allclose(x, self.target.x, rtol=1e-9, atol=1e-12):
            return rows
        return np.array([np.interp(self.target.x, x, row) for row in rows])


@functools.lru_cache(maxsize=8)
def _symmetry_cached(key: str, spacegroup: str | None) -> SymmetryConstraints:
    return symmetry_constraints(Structure.from_str(key, fmt="json"), spacegroup)


def _symmetry(structure: Structure, spacegroup: str | None) -> SymmetryConstraints:
    """The constraints of a structure, computed once per structure and group in a process."""
    return _symmetry_cached(structure.to_json(), spacegroup)
