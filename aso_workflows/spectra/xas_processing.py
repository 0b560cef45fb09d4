"""Raw μ(E) → normalised μ(E) and χ(k), with xraylarch's ``pre_edge`` and ``autobk`` (Athena's AUTOBK).

The settings are the ``processing:`` section of an EXAFS or XANES target in the campaign file
(:class:`XASProcessing`, validated by pydantic, stored with the target). Field names are Larch's, so a
user's Athena/Larch values carry over unchanged::

    processing:
      columns: {energy: energy, mu: mutrans}   # or {i0: i0, itrans: itrans}, {i0: i0, ifluor: iff}
      e0: 8980.5          # default: Larch's find_e0 (maximum of dμ/dE)
      rbkg: 1.0           # AUTOBK: R below which χ(R) is background (Å)
      kweight: 1          # AUTOBK's k-weight (not the fit's)
      kmin: 0             # AUTOBK's spline range in k (Å⁻¹; kmax default: the data's end)

Our own numpy ``pre_edge`` (:mod:`~aso_workflows.spectra.xafs`) was compared with Larch's on the Cu and
Ni foils (``benchmarks/xafs_vs_larch.py``): with the same E0 and ranges the edge steps differ by 0.07 %
and 0.24 % and the flattened μ(E) by up to 2e-3, so measured data are processed by Larch itself; the
windows and the Fourier transform, which agree to 1e-13, stay ours (no Larch needed to score spectra).

Importing this module does not import Larch (the campaign file is read without it); the processing
functions do, through :func:`~aso_workflows.spectra.xraylarch.larch_modules`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aso_workflows.errors import InputError

__all__ = ["MuColumns", "XASProcessing", "ProcessedMu", "process_mu", "check_edge", "find_e0"]

Column = str | Annotated[int, Field(ge=0)]
"""A column by its label (case-insensitive) or its zero-based number."""


class MuColumns(BaseModel):
    """Which columns of the file make μ(E).

    Give at most one of ``mu`` (a column that already holds μ(E)), ``itrans`` (transmission:
    μ = ln(i0/itrans)) or ``ifluor`` (fluorescence: μ = ifluor/i0). With none, a column labelled
    ``mutrans``, ``mufluor``, ``mu`` or ``xmu`` is used, else ``i0`` with ``itrans``/``it``/``i1``
    (transmission) or ``ifluor``/``if`` (fluorescence); anything else is an error listing the labels.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    energy: Column | None = None
    mu: Column | None = None
    i0: Column | None = None
    itrans: Column | None = None
    ifluor: Column | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> MuColumns:
        given = [n for n in ("mu", "itrans", "ifluor") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of mu, itrans (transmission) or ifluor (fluorescence), not {given}")
        if self.mu is not None and self.i0 is not None:
            raise ValueError("i0 is used with itrans or ifluor, not with mu")
        return self


class XASProcessing(BaseModel):
    """How a raw μ(E) target is read and processed (the ``processing`` of an EXAFS/XANES target).

    Attributes
    ----------
    columns
        The columns that make μ(E) (:class:`MuColumns`).
    group
        Athena project (``.prj``) holding several groups: the group's label or zero-based number.
    energy_unit
        ``"eV"`` or ``"keV"`` (energies are multiplied by 1000).
    e0
        Edge energy (eV, absolute); default Larch's ``find_e0``.
    pre1, pre2, norm1, norm2, nnorm, nvict
        Larch ``pre_edge``: pre-edge line range and normalisation range (eV relative to E0), the
        post-edge polynomial's degree and the Victoreen exponent; ``None`` is Larch's default.
    rbkg, kweight, kmin, kmax, dk, window, nclamp, clamp_lo, clamp_hi
        Larch ``autobk`` (EXAFS only): background cut-off (Å), the k-weight and k range (Å⁻¹) of the
        spline fit, its window, and the clamps at the ends; defaults are Larch's.
    kstep
        The χ(k) grid step (Å⁻¹; Larch's 0.05).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: MuColumns = Field(default_factory=MuColumns)
    group: str | Annotated[int, Field(ge=0)] | None = None
    energy_unit: Literal["eV", "keV"] = "eV"
    e0: float | None = None
    pre1: float | None = None
    pre2: float | None = None
    norm1: float | None = None
    norm2: float | None = None
    nnorm: Annotated[int, Field(ge=0, le=3)] | None = None
    nvict: Annotated[int, Field(ge=0, le=4)] = 0
    rbkg: Annotated[float, Field(gt=0, le=5)] = 1.0
    kweight: Annotated[float, Field(ge=0, le=5)] = 1.0
    kmin: Annotated[float, Field(ge=0)] = 0.0
    kmax: Annotated[float, Field(gt=0)] | None = None
    dk: Annotated[float, Field(ge=0)] = 0.1
    window: Literal["hanning", "kaiser", "parzen", "welch", "gaussian", "sine"] = "hanning"
    nclamp: Annotated[int, Field(ge=0)] = 3
    clamp_lo: Annotated[float, Field(ge=0)] = 0.0
    clamp_hi: Annotated[float, Field(ge=0)] = 1.0
    kstep: Annotated[float, Field(gt=0, le=0.2)] = 0.05

    @model_validator(mode="after")
    def _ranges(self) -> XASProcessing:
        for lo, hi in (("pre1", "pre2"), ("norm1", "norm2"), ("kmin", "kmax")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and b <= a:
                raise ValueError(f"{hi} ({b:g}) must be larger than {lo} ({a:g})")
        for name in ("e0", "pre1", "pre2", "norm1", "norm2"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number")
        return self

    def pre_edge_kws(self) -> dict[str, Any]:
        """Keyword arguments of Larch's ``pre_edge`` that are set (the others stay Larch's defaults)."""
        out: dict[str, Any] = {"nvict": self.nvict}
        for name in ("e0", "pre1", "pre2", "norm1", "norm2", "nnorm"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    def autobk_kws(self) -> dict[str, Any]:
        """Keyword arguments of Larch's ``autobk``."""
        out: dict[str, Any] = {
            "rbkg": self.rbkg,
            "kweight": self.kweight,
            "kmin": self.kmin,
            "dk": self.dk,
            "win": self.window,
            "nclamp": self.nclamp,
            "clamp_lo": self.clamp_lo,
            "clamp_hi": self.clamp_hi,
            "kstep": self.kstep,
        }
        if self.kmax is not None:
            out["kmax"] = self.kmax
        return out


@dataclass
class ProcessedMu:
    """What Larch made of one μ(E): the arrays the report plots and the values the target stores.

    ``energy``, ``mu``, ``pre_edge``, ``post_edge``, ``norm``, ``flat`` and (EXAFS) ``bkg`` are on the
    file's energies; ``k``/``chi`` is AUTOBK's χ(k) (unweighted, uniform from k = 0) and ``delta_chi``
    its uncertainty from the spline's covariance (Larch's ``autobk_delta_chi``); ``used`` holds the
    values Larch actually used (E0, edge step, ranges).
    """

    energy: np.ndarray
    mu: np.ndarray
    pre_edge: np.ndarray
    post_edge: np.ndarray
    norm: np.ndarray
    flat: np.ndarray
    used: dict[str, Any]
    bkg: np.ndarray | None = None
    k: np.ndarray | None = None
    chi: np.ndarray | None = None
    delta_chi: np.ndarray | None = None

    def arrays(self) -> dict[str, list[float]]:
        """The arrays as JSON-able lists (what the target keeps in ``extra["xas"]``)."""
        out = {}
        for name in ("energy", "mu", "pre_edge", "post_edge", "norm", "flat", "bkg", "k", "chi", "delta_chi"):
            v = getattr(self, name)
            if v is not None:
                out[name] = np.asarray(v, dtype=float).tolist()
        return out


def check_edge(energy: np.ndarray, mu: np.ndarray, e0: float, step: float, src: str) -> None:
    """Refuse data without a real absorption edge at ``e0`` (one line naming the file).

    An edge needs E0 inside the data with at least 5 points on each side, a positive edge step, a
    step at least 5 × the scatter of μ(E) about a straight line over the points below E0 − 10 eV, and
    μ must actually jump at E0: its mean over [E0 + 15, E0 + 50] eV exceeds its mean over
    [E0 − 50, E0 − 15] eV by at least 30 % of the step (a file without an edge, a slowly varying
    signal such as I0, or a glitch taken for an edge, fails one of these).
    """
    below = energy < e0 - 10.0
    if np.sum(energy < e0) < 5 or np.sum(energy > e0) < 5:
        raise InputError(
            src,
            f"has no absorption edge inside its energy range [{energy[0]:g}, {energy[-1]:g}] eV (E0 {e0:g} eV)",
        )
    if not (np.isfinite(step) and step > 0):
        raise InputError(src, f"has no absorption edge: the edge step at E0 {e0:g} eV is {step:g}")
    lo = (energy >= e0 - 50.0) & (energy <= e0 - 15.0)
    hi = (energy >= e0 + 15.0) & (energy <= e0 + 50.0)
    if lo.any() and hi.any():
        jump = float(np.mean(mu[hi]) - np.mean(mu[lo]))
        if jump < 0.3 * step:
            raise InputError(
                src,
                f"has no clear absorption edge: μ rises by {jump:.3g} across E0 {e0:g} eV, for an edge step of {step:.3g}",
            )
    if np.sum(below) >= 5:
        e, m = energy[below], mu[below]
        scatter = float(np.std(m - np.polyval(np.polyfit(e, m, 1), e)))
        if step < 5 * scatter:
            raise InputError(
                src,
                f"has no clear absorption edge: the edge step {step:.3g} at E0 {e0:g} eV is below 5× the "
                f"pre-edge scatter ({scatter:.3g})",
            )


def process_mu(energy: np.ndarray, mu: np.ndarray, p: XASProcessing, src: str, chi: bool) -> ProcessedMu:
    """Larch's ``pre_edge`` (and, when ``chi``, ``autobk``) on one μ(E).

    Raises
    ------
    InputError
        xraylarch is missing, the data have no edge (:func:`check_edge`), Larch refuses them, or the
        χ(k) it gives is not finite (one line naming the file).
    """
    from aso_workflows.spectra.xraylarch import larch_modules, quiet

    xafs, _ = larch_modules(src)
    from larch import Group

    g = Group(energy=np.asarray(energy, dtype=float), mu=np.asarray(mu, dtype=float))
    try:
        with quiet():
            xafs.pre_edge(g, **p.pre_edge_kws())
    except (ValueError, IndexError, TypeError, np.linalg.LinAlgError) as exc:
        raise InputError(
            src, f"Larch's pre_edge failed ({_first_line(exc)}); check processing.e0/pre1/norm1"
        ) from None
    check_edge(g.energy, g.mu, float(g.e0), float(g.edge_step), src)
    d = g.pre_edge_details
    used: dict[str, Any] = {
        "e0": float(g.e0),
        "edge_step": float(g.edge_step),
        **{n: float(getattr(d, n)) for n in ("pre1", "pre2", "norm1", "norm2")},
        "nnorm": int(d.nnorm),
    }
    out = ProcessedMu(
        energy=np.asarray(g.energy, dtype=float),
        mu=np.asarray(g.mu, dtype=float),
        pre_edge=np.asarray(g.pre_edge, dtype=float),
        post_edge=np.asarray(g.post_edge, dtype=float),
        norm=np.asarray(g.norm, dtype=float),
        flat=np.asarray(g.flat, dtype=float),
        used=used,
    )
    if not chi:
        return out
    kws = p.autobk_kws()
    try:
        with quiet():
            xafs.autobk(g, e0=used["e0"], edge_step=used["edge_step"], **kws)
    except (ValueError, IndexError, TypeError, np.linalg.LinAlgError) as exc:
        raise InputError(
            src, f"Larch's autobk failed ({_first_line(exc)}); check processing.rbkg/kmin/kmax"
        ) from None
    if g.k is None or len(g.k) < 10 or not np.all(np.isfinite(g.chi)):
        raise InputError(src, "Larch's autobk gave no usable χ(k) (too few points above the edge?)")
    out.bkg = np.asarray(g.bkg, dtype=float)
    out.k = np.asarray(g.k, dtype=float)
    out.chi = np.asarray(g.chi, dtype=float)
    from larch.xafs.autobk import autobk_delta_chi

    with quiet():
        autobk_delta_chi(g)  # AUTOBK's uncertainty of χ(k): part of feffit's ε, as in Larch
    dchi = getattr(g, "delta_chi", None)
    if dchi is not None and np.shape(dchi) == np.shape(g.k) and np.all(np.isfinite(dchi)):
        out.delta_chi = np.asarray(dchi, dtype=float)
    used.update({"rbkg": p.rbkg, "bkg_kweight": p.kweight, "bkg_kmin": p.kmin, "bkg_kmax": float(g.k[-1])})
    return out


def find_e0(energy: np.ndarray, mu: np.ndarray, src: str) -> float:
    """The edge energy of μ(E), by xraylarch's ``find_e0`` (Athena's: the maximum of dμ/dE).

    Raises
    ------
    InputError
        xraylarch is missing or fails on the data (one line naming the file).
    """
    from aso_workflows.spectra.xraylarch import larch_modules, quiet

    xafs, _ = larch_modules(src)
    try:
        with quiet():
            e0 = xafs.find_e0(np.asarray(energy, dtype=float), np.asarray(mu, dtype=float))
    except (ValueError, IndexError, TypeError) as exc:
        raise InputError(src, f"cannot find E0 ({_first_line(exc)}); set read_options.e0") from None
    if e0 is None or not np.isfinite(e0):
        raise InputError(src, "cannot find E0; set read_options.e0")
    return float(e0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
