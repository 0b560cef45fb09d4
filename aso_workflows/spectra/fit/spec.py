"""``FitSpec``: which nuisance parameters of a target are fitted, and how (the ``fit:`` of a target).

Short form, a list of parameter names::

    fit: [scale, qdamp, biso]

Long form, with the options of the fit::

    fit:
      refine: [s02, e0]
      bounds: {e0: [-10, 10]}
      kmin: 3.5          # EXAFS fit window (Å⁻¹) ...
      kmax: 11.5
      window: kaiser
      space: r           # fit |χ(R)| (complex χ(R)) instead of k-weighted χ(k)

Which names and options each technique accepts is checked by its fitter
(:func:`~aso_workflows.spectra.fit.registry.make_fitter`), with one-line errors naming the field.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["FitSpec"]


class FitSpec(BaseModel):
    """How one target's nuisance parameters are fitted for every candidate.

    Attributes
    ----------
    refine
        Parameters fitted per candidate; every other one keeps its value from the target's
        ``settings``. PDF: ``scale``, ``qdamp``, ``qbroad``, ``delta1``, ``delta2``, ``spdiameter``
        (nanoparticle diameter), ``biso`` (one per element), ``biso_<El>`` (one element),
        ``uiso``/``uiso_<El>`` (the same in Uiso), ``biso_site``/``uiso_site`` (one per site),
        ``uaniso`` (anisotropic Uij per site); the cell: ``expansion`` (α: every length × (1 + α), the
        cell parameter shared across techniques), ``abc`` (a, b, c) or ``lattice`` (and the free
        angles).
        EXAFS: ``s02``, ``e0``, ``sigma2`` (an extra Debye–Waller factor exp(−2k²σ²)); with
        ``model: paths`` also ``expansion`` (α: every path length × (1 + α), FEFFIT's ΔR = α·R; the
        same parameter as a PDF target's, fitted once when several targets refine it).
        XANES: ``amplitude`` (edge-step normalisation), ``shift`` (energy, eV).
    weights
        ``"uniform"`` (every point counts the same), or ``"dG"``: 1/σ² from the target file's
        uncertainty column (PDF files with dG(r); the Rw is then PDFgui's weighted Rw).
    bounds
        ``{name: [low, high]}`` overriding a parameter's default bounds.
    kmin, kmax, dk, window
        EXAFS: the fit window in k (Å⁻¹; default: the grid less half a sill at each end), its sill
        width (Hanning) or shape parameter (Kaiser–Bessel), as Larch's ``ftwindow``.
    space, rmin, rmax
        EXAFS: fit k-weighted χ(k) (``"k"``), complex χ(R) over ``[rmin, rmax]`` Å (``"r"``) or
        back-transformed χ(q) (``"q"``, FEFFIT-grade model only).
    model
        Another fit than the technique's own, from its registry entry's ``fit_models``. EXAFS:
        ``"paths"`` (FEFFIT-grade: Larch's ``feffit`` on the candidate's FEFF scattering paths, with
        S0², ΔE0, σ², ``expansion``; needs ``aso-workflows[xas]``); left out, the candidate's FEFF χ(k)
        is fitted with S0², E0 and an extra σ².
    sigma2_model
        ``model: paths``: σ² one value for every path (``"global"``), one per shell (``"shell"``:
        single-scattering paths grouped by distance, ``shell_gap`` apart; multiple-scattering paths take
        the σ² of the shell nearest their half length), or from a Debye / Einstein temperature θ fitted
        at the sample temperature ``temperature`` (``"debye"``: Larch's correlated-Debye
        ``sigma2_debye``; ``"einstein"``: ``sigma2_eins``).
    temperature
        ``model: paths``: the sample temperature (K) of the Debye/Einstein σ², and of the σ² of paths
        when ``sigma2`` is not refined (default: the simulator's ``debye`` temperature, else 300 K).
    shell_gap
        ``sigma2_model: shell``: the distance (Å) between path lengths that starts a new shell.
    kweight
        ``model: paths``: the fit's k-weight(s), one number or several fitted at once (Larch's
        multiple k-weights); default the simulator's ``kweight``.
    emin, emax
        XANES: the fit range (eV relative to E0; default: the grid less the shift bounds at each end).
    max_nfev
        Most simulator calls one fit may make (PDF parameters other than ``scale`` re-simulate).
    symmetry
        PDF: ties of the cell and sites of the ADPs from a space group: ``"start"`` (the start
        structure's), a symbol or number (a subgroup, e.g. ``"Pbnm"``); ``None``: none (a, b, c
        independent, every atom its own site).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    refine: list[str] = Field(default_factory=list)
    weights: Literal["uniform", "dG"] = "uniform"
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    kmin: float | None = None
    kmax: float | None = None
    dk: float = Field(default=1.0, ge=0)
    window: Literal["hanning", "kaiser"] = "hanning"
    space: Literal["k", "r", "q"] = "k"
    rmin: float = Field(default=1.0, ge=0)
    rmax: float = Field(default=3.0, gt=0)
    emin: float | None = None
    emax: float | None = None
    max_nfev: int = Field(default=200, ge=1)
    symmetry: str | None = None
    model: str | None = None
    sigma2_model: Literal["global", "shell", "debye", "einstein"] = "global"
    temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    shell_gap: float = Field(default=0.15, gt=0)
    kweight: list[Annotated[float, Field(ge=0, le=4)]] | None = None

    @field_validator("kweight", mode="before")
    @classmethod
    def _kweights(cls, v: Any) -> Any:
        if v is None or isinstance(v, (list, tuple)):
            return v
        return [v]

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, (list, tuple)):
            return {"refine": list(value)}
        if isinstance(value, str):
            return {"refine": [value]}
        return value

    @field_validator("refine")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        out = [str(n).strip() for n in v]
        if any(not n for n in out):
            raise ValueError("parameter names must not be empty")
        bad = [n for n in out if "." in n or n.startswith("$")]
        if bad:  # the names are keys of stored documents
            raise ValueError(
                f"parameter names {bad} must not contain '.' or start with '$' (per element: biso_Ni)"
            )
        dup = sorted({n for n in out if out.count(n) > 1})
        if dup:
            raise ValueError(f"parameter(s) {dup} listed more than once")
        return out

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: dict) -> dict:
        for name, (lo, hi) in v.items():
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(
                    f"bounds of {name!r} must be two finite numbers, low < high; got [{lo}, {hi}]"
                )
        return v

    @model_validator(mode="after")
    def _ranges(self) -> FitSpec:
        if self.kmin is not None and self.kmax is not None and self.kmax <= self.kmin:
            raise ValueError(f"kmax ({self.kmax:g}) must be larger than kmin ({self.kmin:g})")
        if self.rmax <= self.rmin:
            raise ValueError(f"rmax ({self.rmax:g}) must be larger than rmin ({self.rmin:g})")
        if self.emin is not None and self.emax is not None and self.emax <= self.emin:
            raise ValueError(f"emax ({self.emax:g}) must be larger than emin ({self.emin:g})")
        return self

    @property
    def active(self) -> bool:
        """Whether this declares a fit at all (something refined, or an option set): else the target's
        spectra are compared as simulated."""
        return bool(self.refine or self.given())

    def given(self) -> set[str]:
        """The options (besides ``refine``) that differ from their defaults, to refuse those a technique
        ignores. By value, not by what was written: a stored and reloaded spec gives the same answer."""
        return {
            name
            for name, field in type(self).model_fields.items()
            if name != "refine" and getattr(self, name) != field.get_default(call_default_factory=True)
        }
