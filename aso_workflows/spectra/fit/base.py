"""The nuisance-fit interface: a fitter per technique, its result document, the shared least squares.

A fitter is built once per campaign target (:func:`~aso_workflows.spectra.fit.registry.make_fitter`)
and called once per candidate with the candidate's simulated spectrum (and structure, for parameters
that need a new simulation). It returns a :class:`FitResult`: the fitted values, the fitted spectrum
on the target's grid, the weighted MSE against the target and the goodness of fit (Rw or R).

How the parameters are found
----------------------------
Parameters that enter linearly (PDF ``scale``, EXAFS ``s02``, XANES ``amplitude``) are solved in
closed form for every trial of the others (variable projection): for a model m and data d with point
weights w, ``s = Σ w m d / Σ w m²`` (kept ≥ 0). The remaining parameters are found by a bounded search:
``scipy.optimize.minimize_scalar`` (bounded Brent) when there is one, as FEFFIT searches E0, and
``scipy.optimize.least_squares`` (trust-region reflective, bounds, finite-difference Jacobian with a
relative step of 1e-3) when there are several. Written on scipy rather than with pdffit2's own ``refine`` (which can refine scale,
Qdamp, delta2 and Uiso itself) because: the same code serves the EXAFS and XANES fits and the srreal
engine; pdffit2's Levenberg–Marquardt has no bounds (a Uiso or Qdamp can run negative on a poor
candidate); and the scale is exact in closed form instead of being one more iterated parameter.
``benchmarks/measured_ni.py`` checks the result against a pdffit2 refinement of the same parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

import numpy as np
from pymatgen.core import Structure

from aso_workflows.errors import InputError
from aso_workflows.schemas import FitDoc
from aso_workflows.spectra.fit.spec import FitSpec
from aso_workflows.spectra.spectrum import Spectrum, on_target_grid

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator

__all__ = ["FitResult", "NuisanceFitter", "ProfileFit", "profile_fit", "linear_scale"]


class FitResult(FitDoc):
    """One candidate's nuisance fit against one target: the stored :class:`~aso_workflows.schemas.FitDoc`
    and the fitted spectrum.

    Attributes
    ----------
    technique
        A registered technique (``"pdf"``, ``"exafs"``, ``"xanes"`` ...).
    parameters
        Fitted values by name (``scale``, ``qdamp``, ``biso_Ni``, ``s02``, ``e0``, ``shift`` ...);
        empty when nothing is refined.
    goodness_name, goodness
        ``"Rw"`` (PDF, PDFgui's definition) or ``"R"`` (XAS, FEFFIT's R-factor), and its value.
    mse
        Weighted mean squared difference between the fitted spectrum and the target (the quantity
        the campaign's objective divides by its normaliser).
    n_simulations
        Simulator calls the fit made (0 when only closed-form parameters are refined).
    status
        ``"fixed"`` (nothing refined), ``"converged"``, ``"stopped"`` (``max_nfev`` reached) or
        ``"geometry"`` (a refinement step could not keep the minimum distances).
    bounds
        The ``[low, high]`` each parameter was refined within.
    at_bound
        Parameters that ended on a bound (the data would take them further).
    structure
        The candidate with the refined cell / per-site ADPs applied (pymatgen dict), when the fit
        refines them.
    spectrum
        The fitted spectrum on the target's grid (per-site spectra transformed alike).
    uncertainties
        One standard deviation of fitted parameters, from the fit's covariance, where the fit gives
        them (the FEFFIT-grade EXAFS fit: Larch's, scaled as FEFFIT scales them; the PDF fit:
        pdffit2's, as PDFgui shows them, 0 for a parameter held on a bound).
    statistics
        Further figures of the fit where it gives them (EXAFS ``model: paths``: ``chi2_reduced``,
        ``chi_square``, ``n_independent``, ``n_varys``, ``nfev``, ``first_shell_r``).
    """

    status: str = "fixed"
    spectrum: Spectrum

    def summary(self) -> dict:
        """Everything but the spectrum, JSON-able (what an evaluation document stores)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"spectrum"})


def linear_scale(model: np.ndarray, data: np.ndarray, weights: np.ndarray) -> float:
    """The weighted least-squares factor s ≥ 0 minimising ``Σ w (d − s·m)²``."""
    den = float(np.sum(weights * model * model))
    if den <= 0:
        return 0.0
    return max(0.0, float(np.sum(weights * model * data)) / den)


@dataclass
class ProfileFit:
    """What :func:`profile_fit` found: nonlinear values, the linear scale, the model and the cost."""

    values: np.ndarray
    scale: float
    model: np.ndarray
    nfev: int
    converged: bool


def profile_fit(
    model: Callable[[np.ndarray], np.ndarray],
    data: np.ndarray,
    weights: np.ndarray,
    x0: Sequence[float],
    bounds: Sequence[tuple[float, float]],
    scale: bool,
    max_nfev: int,
    residual: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> ProfileFit:
    """Minimise ``Σ w (d − s·model(x))²`` over bounded ``x`` with ``s`` in closed form (or fixed 1).

    Parameters
    ----------
    model
        ``x → model values`` (same length as ``data``).
    data, weights
        Target values and per-point weights (≥ 0).
    x0, bounds
        Start and ``(low, high)`` per nonlinear parameter (``x0`` is clipped into the bounds).
    scale
        Solve a linear factor in closed form (else it is 1).
    max_nfev
        Most calls of ``model``.
    residual
        Optional ``model values → (data_vec, model_vec)`` for fits done in another space (EXAFS χ(R)):
        the factor and the cost are then computed on those vectors, unweighted.
    """
    problem = _Profile(model, data, weights, scale, residual)
    x0 = np.array([min(max(v, lo), hi) for v, (lo, hi) in zip(x0, bounds, strict=True)], dtype=float)
    if len(x0) == 0:
        x, converged = x0, True
    elif len(x0) == 1:
        x, converged = problem.minimise_1d(x0, bounds[0], max_nfev)
    else:
        x, converged = problem.minimise(x0, bounds, max_nfev)
    m = problem.evaluate(x)
    s, _ = problem.solve(x)
    return ProfileFit(values=x, scale=s, model=m, nfev=problem.calls, converged=converged)


class _Profile:
    """The variable-projection problem of :func:`profile_fit`: the model's values cached by parameter
    vector (so the final evaluation costs no extra call), the linear factor solved for each."""

    def __init__(
        self,
        model: Callable[[np.ndarray], np.ndarray],
        data: np.ndarray,
        weights: np.ndarray,
        scale: bool,
        residual: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None,
    ) -> None:
        self.model, self.data, self.scale, self.residual = model, data, scale, residual
        self.sw = np.sqrt(weights)
        self.calls = 0
        self.cache: dict[tuple, np.ndarray] = {}

    def evaluate(self, x: np.ndarray) -> np.ndarray:
        key = tuple(np.round(np.asarray(x, dtype=float), 14))
        if key not in self.cache:
            self.calls += 1
            self.cache[key] = np.asarray(self.model(np.asarray(x, dtype=float)), dtype=float)
        return self.cache[key]

    def vectors(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.residual is not None:
            return self.residual(m)
        return self.sw * self.data, self.sw * m

    def solve(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The linear factor at ``x`` (or 1) and the residual vector."""
        d, m = self.vectors(self.evaluate(x))
        s = linear_scale(m, d, np.ones_like(m)) if self.scale else 1.0
        return s, d - s * m

    def cost(self, x: np.ndarray) -> float:
        return float(np.sum(self.solve(x)[1] ** 2))

    def minimise_1d(
        self, x0: np.ndarray, bounds: tuple[float, float], max_nfev: int
    ) -> tuple[np.ndarray, bool]:
        """Bounded Brent search on one parameter (as FEFFIT searches E0); the start kept if better."""
        from scipy.optimize import minimize_scalar

        lo, hi = bounds
        res = minimize_scalar(
            lambda v: self.cost(np.array([v])),
            bounds=(lo, hi),
            method="bounded",
            options={"xatol": 1e-6 * (hi - lo), "maxiter": max_nfev},
        )
        x = np.array([float(res.x)])
        if self.cost(x0) < float(res.fun):  # Brent's search never evaluates the start: keep it if better
            x = x0
        return x, bool(res.success)

    def minimise(
        self, x0: np.ndarray, bounds: Sequence[tuple[float, float]], max_nfev: int
    ) -> tuple[np.ndarray, bool]:
        """Trust-region reflective least squares on several bounded parameters."""
        from scipy.optimize import least_squares

        def residuals(v: np.ndarray) -> np.ndarray:
            return self.solve(v)[1]

        res = least_squares(
            residuals,
            x0,
            bounds=(np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])),
            method="trf",
            x_scale="jac",
            # Relative finite-difference step: pdffit2 receives the structure (Uiso) as text with 8
            # decimals, so steps much below 1e-4 of a parameter can show no change at all.
            diff_step=np.full(np.shape(x0), 1e-3),
            max_nfev=max_nfev,
        )
        return np.asarray(res.x, dtype=float), res.status > 0


SimulatorT = TypeVar("SimulatorT", bound="Simulator")
"""The simulator class a fitter works with (its settings are the fit's start and fixed values)."""


class NuisanceFitter(ABC, Generic[SimulatorT]):
    """Fits one technique's nuisance parameters of a candidate against the campaign's target.

    Subclasses declare :attr:`technique`, :attr:`LINEAR` (the closed-form factor's name),
    :attr:`OPTIONS` (the :class:`FitSpec` options they use) and implement :meth:`parameter_names`,
    :meth:`point_weights` and :meth:`fit`.

    Parameters
    ----------
    spec
        The target's ``fit`` declaration.
    target
        The target spectrum (on the simulator's grid, as the campaign reads it).
    simulator
        The technique's simulator (its settings are the fixed values and the start of the fit).
    """

    technique: ClassVar[str] = ""
    LINEAR: ClassVar[str] = ""
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"weights", "bounds", "max_nfev"})
    SHARED: ClassVar[frozenset[str]] = frozenset()
    """Parameters this fitter can take as fixed from outside (``fit(..., fixed=...)``): those a campaign
    fits once for several targets (``expansion``, :meth:`~aso_workflows.spectra.mismatch.Objective.evaluate_fitted`)."""

    def __init__(self, spec: FitSpec, target: Spectrum, simulator: SimulatorT) -> None:
        self.spec = spec
        self.target = target
        self.simulator = simulator
        unused = sorted(spec.given() - self.OPTIONS)
        if unused:
            raise InputError(
                "fit", f"option(s) {unused} do not apply to {self.technique}; it takes {sorted(self.OPTIONS)}"
            )
        allowed = self.parameter_names()
        unknown = [n for n in spec.refine if n not in allowed and not self._element_form(n)]
        if unknown:
            raise InputError(
                "fit.refine",
                f"unknown {self.technique} parameter(s) {unknown}; expected some of {allowed}",
            )
        for name in spec.bounds:
            if name not in spec.refine:
                raise InputError("fit.bounds", f"{name!r} is not refined (fit.refine is {spec.refine})")
        if spec.weights == "dG" and not target.extra.get("dy"):
            raise InputError(
                "fit.weights",
                f"'dG' needs uncertainties in the target file ({target.source or 'target'} has none)",
            )

    # -- declared per technique ---------------------------------------------------------------
    @abstractmethod
    def parameter_names(self) -> list[str]:
        """The names ``fit.refine`` may list."""

    def _element_form(self, name: str) -> bool:
        """Whether ``name`` is a per-element form such as ``biso_Ni`` (PDF only)."""
        return False

    @abstractmethod
    def point_weights(self) -> np.ndarray:
        """Per-point weights on the target grid used by the fit, the MSE and the goodness."""

    @abstractmethod
    def fit(
        self, spectrum: Spectrum, structure: Structure | None = None, fixed: Mapping[str, float] | None = None
    ) -> FitResult:
        """Fit ``spectrum`` (the candidate's simulation) to the target.

        Parameters
        ----------
        spectrum, structure
            The candidate's simulated spectrum and structure.
        fixed
            Values of :attr:`SHARED` parameters fitted elsewhere (held fixed here, not reported as
            this fit's parameters).

        Raises
        ------
        InputError
            A parameter needs the structure (a new simulation) and none was given, or ``fixed`` names a
            parameter this fitter cannot take.
        """

    def check_fixed(self, fixed: Mapping[str, float] | None) -> dict[str, float]:
        """``fixed`` as a dict, after refusing names outside :attr:`SHARED`."""
        out = dict(fixed or {})
        bad = sorted(set(out) - self.SHARED)
        if bad:
            raise InputError("fit", f"{self.technique} cannot take {bad} from another target's fit")
        return out

    # -- shared helpers -----------------------------------------------------------------------
    def on_target_grid(self, spectrum: Spectrum) -> Spectrum:
        """``spectrum`` on the target's grid (:func:`~aso_workflows.spectra.spectrum.on_target_grid`)."""
        return on_target_grid(spectrum, self.target.grid)

    def bounds_of(self, name: str, default: tuple[float, float]) -> tuple[float, float]:
        lo, hi = self.spec.bounds.get(name, default)
        return float(lo), float(hi)

    def weighted_mse(self, values: np.ndarray, weights: np.ndarray | None = None) -> float:
        """``Σ w (v − t)² / Σ w`` against the target."""
        w = self.point_weights() if weights is None else weights
        return float(np.sum(w * (np.asarray(values) - self.target.y) ** 2) / np.sum(w))
