"""A PDFgui refinement with pdffit2: the nuisance set, the cell, the ADPs and (for the polish) positions.

What PDFgui refines for a structure model against a measured G(r), with pdffit2's own machinery
(Levenberg–Marquardt on analytic derivatives, ``PdfFit.refine_step``; uncertainties from its
covariance, as PDFgui reports them):

=================  ====================================================================================
``scale``          pdffit2's data scale ``dscale``
``qdamp``          Q resolution damping (Å⁻¹); ``qbroad`` the Q broadening
``delta1/delta2``  correlated-motion sharpening (Å, Å²)
``spdiameter``     spherical nanoparticle diameter (Å): the shape envelope of a nanoparticle PDF
``expansion``      the cell, isotropic: every length × (1 + α) (the parameter shared with EXAFS)
``abc``            a, b, c (tied as the symmetry ties them: one ``a`` for a cubic cell)
``lattice``        a, b, c and the angles the symmetry leaves free
``uiso``/``biso``  one per element (``uiso_Ni``); ``uiso_El`` one element only
``uiso_site``      one per site (orbit of equivalent atoms, ``uiso(O2)``); ``biso_site`` in Biso
``uaniso``         anisotropic Uij per site, as the site symmetry allows (``u11(O2)``, ``u12(O2)`` ...)
positions          the polish only: the free coordinates (``x(O2)`` ...) of the symmetry, or every atom
=================  ====================================================================================

Sites and ties come from a :class:`~aso_workflows.symmetry.SymmetryConstraints` (the start's space group
or a subgroup the user names); without one every atom is its own site and a, b, c and the angles are
independent. Positions are always refined through one: the given one, or the structure's own symmetry
(spglib), which keeps atoms on special positions fixed (their derivative vanishes and pdffit2's normal
matrix would be singular) and fixes the origin along directions the whole structure may slide.

Bounds
------
pdffit2 has none. After each step a parameter outside its bounds is put on the bound and held there
(``fixpar``) for the rest of the refinement (an active set, as projected Levenberg–Marquardt does); the
result lists it in ``at_bound``. A step that brings two atoms closer than their minimum distance (or a
bond out of its restraint window) is shortened, halved until it keeps them, as the DiffPy baseline does.

Model identity
--------------
The data are given on the simulator's grid, extended with zeros down to just above r = 0, and only
``[rmin, rmax]`` is fitted (``pdfrange``), so pdffit2's model is the simulator's exactly
(:class:`~aso_workflows.spectra.pdf.PDFSimulator` at the refined settings and structure, × scale).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pymatgen.core import Lattice, Structure

from aso_workflows.errors import InputError, SimulationError
from aso_workflows.spectra.pdf import ADP_PROPERTY, biso_to_uiso
from aso_workflows.symmetry import SymmetryConstraints, symmetry_constraints

if TYPE_CHECKING:
    from diffpy.pdffit2 import PdfFit

    from aso_workflows.spectra.pdf import PDFSimulator

__all__ = ["PDF_BOUNDS", "NUISANCE", "Plan", "PdfFitProblem", "Refined", "QUADRATIC_START"]

PDF_BOUNDS: dict[str, tuple[float, float]] = {
    "scale": (0.0, 1e6),
    "qdamp": (0.0, 0.3),
    "qbroad": (0.0, 0.3),
    "delta1": (0.0, 5.0),
    "delta2": (0.0, 20.0),
    "spdiameter": (5.0, 1e4),
    "biso": (0.01, 10.0),
    "uiso": (biso_to_uiso(0.01), biso_to_uiso(10.0)),
    "expansion": (-0.1, 0.1),
    "uaniso": (0.0, 0.25),
    "uaniso_off": (-0.25, 0.25),
}
"""Default bounds (Å⁻¹ for Qdamp/Qbroad, Å and Å² for delta1/delta2, Å for spdiameter, Å² for ADPs).
Cell lengths: ±10 % of the start; angles: ±10°; positions: ±:data:`POSITION_REACH` from the start."""

NUISANCE = ("scale", "qdamp", "qbroad", "delta1", "delta2", "spdiameter")
"""Parameters of the experiment, not the structure (pdffit2 variables of the same name; scale = dscale)."""

QUADRATIC_START = 0.02
"""Qdamp and Qbroad enter G(r) squared: their derivative vanishes at 0, so a fit started there never
moves. A refined Qdamp or Qbroad set below this value (Å⁻¹) starts here instead."""

POSITION_REACH = 0.5
"""How far (Å, along its axis) a refinement may move a free coordinate from where it started: a polish,
not a search (a Levenberg–Marquardt step from a flat start can be huge)."""

SPDIAMETER_START = 100.0
"""Start of a refined ``spdiameter`` (Å) when the settings have none (0: bulk)."""

_VARS = {"scale": "dscale", "qdamp": "qdamp", "qbroad": "qbroad", "delta1": "delta1", "delta2": "delta2"}
_UNAMES = ("u11", "u22", "u33", "u12", "u13", "u23")
_WEIGHTLESS = 1e10  # dG of the data points below rmin: in the calculation, not in the fit
_STALL_CALLS = 4
_RELEASES = 2  # times parameters held on a bound are let go again after the refinement converged  # calls without a relative Rw² decrease of 1e-9 before the refinement counts as converged


@dataclass(frozen=True)
class Plan:
    """What a refinement refines (parsed from ``fit.refine`` names, module docstring).

    Attributes
    ----------
    nuisance
        Names among :data:`NUISANCE`.
    lattice
        ``None``, ``"iso"`` (``expansion``), ``"abc"`` or ``"full"``.
    adp
        ``None``, ``"element"``, ``"site"`` or ``"aniso"``.
    adp_unit
        ``"uiso"`` or ``"biso"`` (names and values of isotropic ADPs).
    adp_elements
        ``adp == "element"``: the elements refined (``None``: every element).
    positions
        Refine the free coordinates too (the polish).
    """

    nuisance: tuple[str, ...] = ()
    lattice: str | None = None
    adp: str | None = None
    adp_unit: str = "uiso"
    adp_elements: tuple[str, ...] | None = None
    positions: bool = False

    @classmethod
    def from_names(cls, names: list[str], positions: bool = False) -> Plan:
        """The plan of ``fit.refine`` names (one-line :class:`InputError` on field ``fit.refine``)."""
        nuisance = tuple(n for n in NUISANCE if n in names)
        lattice = [m for n, m in (("expansion", "iso"), ("abc", "abc"), ("lattice", "full")) if n in names]
        if len(lattice) > 1:
            raise InputError("fit.refine", "lists more than one of expansion, abc, lattice (one cell model)")
        adp_kinds, units, elements = set(), set(), []
        for n in names:
            kind, _, rest = n.partition("_")
            if n == "uaniso":
                adp_kinds.add("aniso")
            elif kind in ("biso", "uiso"):
                units.add(kind)
                if rest == "site":
                    adp_kinds.add("site")
                else:
                    adp_kinds.add("element")
                    if rest:
                        elements.append(rest.capitalize())
        if len(units) > 1:
            raise InputError(
                "fit.refine", "lists both biso and uiso forms; they are one parameter in two units"
            )
        if len(adp_kinds) > 1:
            raise InputError(
                "fit.refine", f"mixes ADP models {sorted(adp_kinds)}; choose per element, per site or uaniso"
            )
        if elements and len(elements) < sum(1 for n in names if n in ("biso", "uiso")) + len(elements):
            raise InputError("fit.refine", "lists biso/uiso for every element and for one element")
        return cls(
            nuisance=nuisance,
            lattice=lattice[0] if lattice else None,
            adp=next(iter(adp_kinds), None),
            adp_unit=next(iter(units), "uiso"),
            adp_elements=tuple(elements) if elements else None,
            positions=positions,
        )

    @property
    def structural(self) -> bool:
        """Whether anything but the scale is refined (then G(r) must be computed again)."""
        return bool(set(self.nuisance) - {"scale"} or self.lattice or self.adp or self.positions)


@dataclass
class Refined:
    """What a refinement reached.

    Attributes
    ----------
    values, sigmas
        Refined value and uncertainty (pdffit2's, from the covariance; 0 for a parameter held at a
        bound or fixed) per parameter name.
    bounds
        The bounds each parameter was refined within.
    at_bound
        Parameters that ended on a bound.
    rw
        pdffit2's Rw over the fit range (weighted as the data are).
    calls
        PDF + derivative calculations spent (pdffit2 ``refine_step`` calls; the first counts two).
    status
        ``"converged"``, ``"calls"`` (budget spent) or ``"geometry"`` (a step could not be shortened
        enough to keep the minimum distances / restraints).
    model
        The fitted G(r) on the simulator's grid (scale included).
    structure
        The refined structure (cell, positions; sites carry their Uij as the ``adp`` site property when
        ADPs per site are refined).
    settings
        The simulator settings at the refined values (``qdamp``, ``biso`` per element ...).
    scale
        The refined (or fixed) data scale.
    fixed
        The parameters held at given values (``values`` has them too).
    """

    values: dict[str, float]
    sigmas: dict[str, float]
    bounds: dict[str, tuple[float, float]]
    at_bound: list[str]
    rw: float
    calls: int
    status: str
    model: np.ndarray
    structure: Structure
    settings: dict[str, Any]
    scale: float
    fixed: dict[str, float] = field(default_factory=dict)


@dataclass
class _Run:
    """The state of one refinement: calls spent, parameters held (0-based), how it ends."""

    held: set[int]
    calls: int = 0
    fresh: bool = True
    singular: bool = False
    releases: int = 0
    status: str = "converged"
    at_bound: set[str] = field(default_factory=set)


@dataclass
class _Par:
    name: str
    start: float
    bounds: tuple[float, float]


@dataclass
class PdfFitProblem:
    """One pdffit2 refinement of ``structure`` against ``target`` (module docstring).

    Parameters
    ----------
    structure
        The candidate.
    simulator
        The campaign's PDF simulator: grid, Qmax, radiation and every value not refined.
    target, dy
        Target G(r) on ``simulator.r()`` and its uncertainties (``None``: unit weights).
    plan
        What is refined.
    symmetry
        Sites and ties (``None``: every atom its own site; positions then use the structure's own
        symmetry).
    bounds, start, fixed
        Overrides per parameter name: bounds, start values, values held fixed.
    geometry_ok
        For the polish: ``structure → bool``, whether a structure keeps the minimum distances and
        restraints (steps that break them are shortened).
    """

    structure: Structure
    simulator: PDFSimulator
    target: np.ndarray
    dy: np.ndarray | None
    plan: Plan
    symmetry: SymmetryConstraints | None = None
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    start: Mapping[str, float] = field(default_factory=dict)
    fixed: Mapping[str, float] = field(default_factory=dict)
    geometry_ok: Callable[[Structure], bool] | None = None

    def __post_init__(self) -> None:
        if self.simulator.resolved_engine != "pdffit2":
            raise InputError("fit", "refining with pdffit2 needs the PDF engine 'pdffit2'")
        self.pars: list[_Par] = []
        self._formulas: dict[str, tuple[float, dict[int, float]]] = {}
        self._sites = self._site_symmetry()
        self._positions = self._position_symmetry() if self.plan.positions else None
        self._build()

    # ---- parameters ---------------------------------------------------------------------------
    def _site_symmetry(self) -> SymmetryConstraints | None:
        return self.symmetry

    def _position_symmetry(self) -> SymmetryConstraints:
        if self.symmetry is not None:
            return self.symmetry
        return symmetry_constraints(self.structure)  # the structure's own group (module docstring)

    def _add(self, name: str, start: float, default: tuple[float, float]) -> int:
        lo, hi = self.bounds.get(name, default)
        value = float(self.start.get(name, start))
        self.pars.append(_Par(name, value, (float(lo), float(hi))))
        return len(self.pars)  # pdffit2's parameter index @k

    def _set(self, var: str, offset: float, coefs: dict[int, float]) -> None:
        self._formulas[var] = (offset, coefs)

    def _labels(self) -> tuple[list[str], list[list[int]]]:
        """Site label of every atom and the sites (orbits): from the symmetry, else one per atom."""
        if self._sites is not None:
            return self._sites.labels, self._sites.orbits
        count: dict[str, int] = {}
        labels = []
        for site in self.structure:
            el = site.specie.symbol
            count[el] = count.get(el, 0) + 1
            labels.append(f"{el}{count[el]}")
        return labels, [[i] for i in range(len(self.structure))]

    def _build(self) -> None:
        sim = self.simulator
        for name in self.plan.nuisance:
            if name == "scale":
                start = 1.0
            elif name == "spdiameter":
                start = sim.spdiameter or SPDIAMETER_START
            else:
                start = float(getattr(sim, name))
                start = max(start, QUADRATIC_START) if name in ("qdamp", "qbroad") else start
            k = self._add(name, start, PDF_BOUNDS[name])
            self._set(_VARS.get(name, name), 0.0, {k: 1.0})
        self._build_lattice()
        self._build_adps()
        if self._positions is not None:
            self._build_positions(self._positions)

    def _build_lattice(self) -> None:
        mode = self.plan.lattice
        if mode is None:
            return
        abc = np.asarray(self.structure.lattice.abc, dtype=float)
        angles = np.asarray(self.structure.lattice.angles, dtype=float)
        if mode == "iso":
            k = self._add("expansion", 0.0, PDF_BOUNDS["expansion"])
            for i in range(3):
                self._set(f"lat({i + 1})", float(abc[i]), {k: float(abc[i])})
            return
        sites = self._sites
        lengths = sites.length_groups if sites is not None else [[0], [1], [2]]
        for group in lengths:
            first = group[0]
            k = self._add("abc"[first], float(abc[first]), (0.9 * abc[first], 1.1 * abc[first]))
            for i in group:
                self._set(f"lat({i + 1})", 0.0, {k: 1.0})
        if mode != "full":
            return
        free = sites.angle_groups if sites is not None else [[0], [1], [2]]
        for group in free:
            first = group[0]
            name = ("alpha", "beta", "gamma")[first]
            k = self._add(name, float(angles[first]), (angles[first] - 10.0, angles[first] + 10.0))
            for i in group:
                self._set(f"lat({i + 4})", 0.0, {k: 1.0})

    def _iso_unit(self) -> np.ndarray:
        """The six Uij (CIF convention) of Uiso = 1 Å² in this cell (not the identity off a right-angled
        cell: u12 = ½ in a hexagonal one)."""
        from diffpy.structure import Atom
        from diffpy.structure import Lattice as DLattice

        lat = DLattice(*self.structure.lattice.abc, *self.structure.lattice.angles)
        u = Atom("H", xyz=(0, 0, 0), Uisoequiv=1.0, lattice=lat).U
        return np.array([u[0, 0], u[1, 1], u[2, 2], u[0, 1], u[0, 2], u[1, 2]])

    def _start_uiso(self, element: str) -> float:
        biso = self.simulator.biso
        if isinstance(biso, dict):
            if element not in biso:
                raise InputError("fit.refine", f"ADPs of {element}: the settings give no Biso for {element}")
            return float(biso_to_uiso(float(biso[element])))
        return float(biso_to_uiso(float(biso)))

    def _build_adps(self) -> None:
        mode, unit = self.plan.adp, self.plan.adp_unit
        if mode is None:
            return
        iso = self._iso_unit()
        per = 1.0 if unit == "uiso" else 1.0 / (8.0 * math.pi**2)  # Uij per unit of the parameter
        species = [site.specie.symbol for site in self.structure]
        if mode == "element":
            wanted = self.plan.adp_elements or tuple(sorted(set(species)))
            for el in wanted:
                if el not in species:
                    raise InputError("fit.refine", f"{unit}_{el}: the structure has no {el}")
                u0 = self._start_uiso(el)
                k = self._add(f"{unit}_{el}", u0 / per, PDF_BOUNDS[unit])
                for i, sp in enumerate(species):
                    if sp == el:
                        self._set_u(i, {k: iso * per})
            return
        labels, orbits = self._labels()
        for orbit in orbits:
            label = labels[orbit[0]]
            u0 = self._start_uiso(species[orbit[0]])
            if mode == "site":
                k = self._add(f"{unit}({label})", u0 / per, PDF_BOUNDS[unit])
                for i in orbit:
                    self._set_u(i, {k: iso * per})
                continue
            self._build_aniso(orbit, label, u0 * iso)

    def _build_aniso(self, orbit: list[int], label: str, u_start: np.ndarray) -> None:
        sites = self._sites
        if sites is not None:
            basis, transforms = sites.adp_basis(sites.orbits.index(orbit))
        else:
            basis, transforms = np.eye(6), [np.eye(3)]
        q0 = np.linalg.lstsq(basis, u_start, rcond=None)[0]
        ks = []
        for c in range(basis.shape[1]):
            pivot = int(np.argmax(np.abs(basis[:, c])))
            off = pivot >= 3
            bounds = PDF_BOUNDS["uaniso_off"] if off else PDF_BOUNDS["uaniso"]
            ks.append(self._add(f"{_UNAMES[pivot]}({label})", float(q0[c]), bounds))
        for i, m in zip(orbit, transforms, strict=True):
            coefs: dict[int, np.ndarray] = {}
            for c, k in enumerate(ks):
                b = basis[:, c]
                u = np.array([[b[0], b[3], b[4]], [b[3], b[1], b[5]], [b[4], b[5], b[2]]])
                v = m @ u @ m.T
                coefs[k] = np.array([v[0, 0], v[1, 1], v[2, 2], v[0, 1], v[0, 2], v[1, 2]])
            self._set_u(i, coefs)

    def _set_u(self, atom: int, coefs: dict[int, np.ndarray]) -> None:
        for c, name in enumerate(_UNAMES):
            terms = {k: float(v[c]) for k, v in coefs.items() if abs(float(v[c])) > 1e-14}
            self._set(f"{name}({atom + 1})", 0.0, terms)

    def _build_positions(self, sym: SymmetryConstraints) -> None:
        p0 = sym.parameters(self.structure.frac_coords)
        lengths = np.asarray(self.structure.lattice.abc)
        ks = []
        for name, v in zip(sym.names, p0, strict=True):
            reach = POSITION_REACH / float(lengths["xyz".index(name[0])])  # fractional
            ks.append(self._add(name, float(v), (float(v) - reach, float(v) + reach)))
        n = len(self.structure)
        basis = sym.basis.reshape(n, 3, -1)
        for i in range(n):
            for c, axis in enumerate("xyz"):
                terms = {k: float(basis[i, c, j]) for j, k in enumerate(ks) if abs(basis[i, c, j]) > 1e-14}
                self._set(f"{axis}({i + 1})", float(sym.reference[i, c]), terms)

    # ---- pdffit2 ------------------------------------------------------------------------------
    def _engine(self, values: np.ndarray | None, held: set[int]) -> PdfFit:
        """A pdffit2 engine with the data, the structure and the constraints, its parameters at
        ``values`` (``None``: the starts) and those in ``held`` (0-based) fixed."""
        import diffpy.pdffit2 as pdffit2

        from aso_workflows.spectra.pdf import _to_diffpy

        sim = self.simulator
        pdffit2.redirect_stdout(io.StringIO())  # its banner and per-step lines
        pf = pdffit2.PdfFit()
        r = sim.r()
        target = np.asarray(self.target, dtype=float)
        if target.shape != r.shape:
            raise InputError("targets.pdf", f"target has {target.size} points, the simulator grid {r.size}")
        # Data down to just above r = 0 and the fit range from there, with the points below rmin weighted
        # by ~0 (dG = 1e10): pdffit2 computes the model over the fit range ± 12π/Qmax, so this makes its
        # model the simulator's exactly (whose range starts just above 0); only [rmin, rmax] counts.
        m = max(0, int(math.ceil(sim.rmin / sim.rstep - 1e-9)) - 1)
        r_ext = np.round(sim.rmin - m * sim.rstep + sim.rstep * np.arange(m + r.size), 10)
        g_ext = np.concatenate([np.zeros(m), target])
        stype = "N" if sim.radiation == "neutron" else "X"
        dy = np.ones(r.size) if self.dy is None else np.asarray(self.dy, dtype=float)
        dy_ext = np.concatenate([np.full(m, _WEIGHTLESS), dy])
        pf.read_data_lists(stype, sim.qmax, sim.qdamp, r_ext.tolist(), g_ext.tolist(), dy_ext.tolist())
        pf.pdfrange(1, float(r_ext[0]), float(r_ext[-1]))
        pf.add_structure(_to_diffpy(self.structure, biso_to_uiso(sim.biso)))
        for name in ("qbroad", "delta1", "delta2", "spdiameter"):
            value = float(getattr(sim, name))
            if value > 0:
                pf.setvar(getattr(pf, name)(), value)
        for var, (offset, coefs) in self._formulas.items():
            terms = [f"{c:.15g}*@{k}" if c != 1.0 else f"@{k}" for k, c in coefs.items()]
            formula = " + ".join(([f"{offset:.15g}"] if offset or not terms else []) + terms)
            pf.constrain(var, formula.replace("+ -", "- "))
        for k, p in enumerate(self.pars):
            lo, hi = p.bounds
            v = float(self.fixed.get(p.name, min(max(p.start, lo), hi))) if values is None else values[k]
            pf.setpar(k + 1, float(v))
            if k in held:
                pf.fixpar(k + 1)
        return pf

    def refine(self, max_calls: int) -> Refined:
        """Refine for at most ``max_calls`` PDF + derivative calculations (module docstring)."""
        import diffpy.pdffit2 as pdffit2

        held = {k for k, p in enumerate(self.pars) if p.name in self.fixed}
        run = _Run(held=held)
        try:
            pf = self._engine(None, held)
            if len(held) < len(self.pars):
                pf = self._iterate(pf, max_calls, run)
                pf = self._finish(pf, run)
            else:
                pf.calc()
                run.calls += 1
            values = self._values(pf)
            pf.calc()  # the model at the parameters (after a rejected trial the variables are the trial's)
            run.calls += 1
        except Exception as exc:  # pdffit2's own exception types (a bad constraint, a failed calculation)
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SimulationError(f"pdffit2 refinement failed: {msg}") from None
        finally:
            pdffit2.redirect_stdout(io.StringIO())
        return self._result(pf, values, run)

    def refine_as_pdfgui(self, toler: float = 1e-8) -> Refined:
        """The same problem refined as PDFgui does it: pdffit2's own ``refine()`` (its stopping rule, no
        bounds, no geometry check), for comparisons. The calls are not counted (``calls`` is 0)."""
        import diffpy.pdffit2 as pdffit2

        run = _Run(held=self._fixed_indices())
        try:
            pf = self._engine(None, run.held)
            pf.refine(toler)
            values = self._values(pf)
            pf.calc()
        except Exception as exc:  # pdffit2's own exception types
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SimulationError(f"pdffit2 refinement failed: {msg}") from None
        finally:
            pdffit2.redirect_stdout(io.StringIO())
        run.calls = 0
        return self._result(pf, values, run)

    def _values(self, pf: PdfFit) -> np.ndarray:
        return np.array([pf.getpar(k) for k in range(1, len(self.pars) + 1)], dtype=float)

    def _step(self, pf: PdfFit, toler: float, run: _Run) -> bool | None:
        """One ``refine_step``; ``None`` when pdffit2 cannot take it (a singular normal matrix: an exact
        fit, or a parameter without effect)."""
        run.calls += 2 if run.fresh else 1  # the first call of an engine also evaluates its start
        run.fresh = False
        try:
            return bool(pf.refine_step(toler))
        except Exception as exc:  # pdffit2's own exception types
            if "singular" not in str(exc).lower():
                raise
            run.singular = True
            return None

    def _iterate(self, pf: PdfFit, max_calls: int, run: _Run) -> PdfFit:
        """Levenberg–Marquardt steps with pdffit2's stopping rule off (its three non-improving steps at
        damping 1 stop far from the minimum); stop after :data:`_STALL_CALLS` calls that lower Rw² by
        less than 1e-9 (relative), or at ``max_calls``, keeping room for the covariance calls. A step
        shortened for the bounds or the geometry goes on in a fresh engine from there (pdffit2 keeps
        its own χ² of the step it took, which no longer holds)."""
        best = math.inf
        stall = 0
        while run.calls + 6 < max_calls:
            before = self._values(pf)
            if self._step(pf, -1.0, run) is None:
                pf = self._engine(before, run.held)
                run.fresh = True
                return pf
            after = self._values(pf)
            kept = self._within_bounds(before, after, run)
            kept = self._geometry(before, kept)
            if kept is None:
                run.status = "geometry"
                return self._engine(before, run.held)
            if not np.array_equal(kept, after):
                pf = self._engine(kept, run.held)
                run.fresh = True
            rw2 = float(pf.getrw()) ** 2 if not run.fresh else math.inf
            if rw2 < best * (1.0 - 1e-9) or run.fresh:
                best, stall = min(best, rw2), 0
                continue
            stall += 1
            if stall < _STALL_CALLS:
                continue
            released = run.held - self._fixed_indices()
            if not released or run.releases >= _RELEASES:
                return pf
            # converged with parameters held on their bounds: let them go (a far-off early step may have
            # pushed them there); those the data still push out are held again at once
            run.releases += 1
            run.held -= released
            pf = self._engine(self._values(pf), run.held)
            run.fresh, stall = True, 0
        run.status = "calls"
        return pf

    def _fixed_indices(self) -> set[int]:
        return {k for k, p in enumerate(self.pars) if p.name in self.fixed}

    def _finish(self, pf: PdfFit, run: _Run) -> PdfFit:
        """pdffit2 computes the covariance (the uncertainties) only when it ends a refinement by its own
        rule: a huge tolerance makes each step count as non-improving, ending it in ~4 calls. A step it
        takes meanwhile is kept only if it respects bounds and geometry."""
        if run.singular:
            return pf  # no covariance to be had
        before = self._values(pf)
        for _ in range(8):
            done = self._step(pf, 1e30, run)
            if done is None or done:
                break
        after = self._values(pf)
        kept = self._geometry(before, self._within_bounds(before, after, run), halve=False)
        if kept is None or not np.array_equal(kept, after):
            for k, v in enumerate(before, start=1):
                pf.setpar(k, float(v))
        return pf

    def _within_bounds(self, before: np.ndarray, after: np.ndarray, run: _Run) -> np.ndarray:
        """Keep a step within the bounds: a parameter already on a bound that the step pushes further
        out is held there from now on (active set); a step that would take another one out is
        shortened to half the way to that bound (a Levenberg–Marquardt step far from the minimum
        overshoots; landing on the bound would hold the parameter there at once), or onto it when it
        is within 1e-3 of the range."""
        lo = np.array([p.bounds[0] for p in self.pars])
        hi = np.array([p.bounds[1] for p in self.pars])
        step = after - before
        for k in range(len(self.pars)):
            if (before[k] <= lo[k] and step[k] < 0) or (before[k] >= hi[k] and step[k] > 0):
                run.held.add(k)
            if k in run.held:
                step[k] = 0.0
        t = 1.0
        for k in range(len(self.pars)):
            bound = lo[k] if before[k] + step[k] < lo[k] else hi[k] if before[k] + step[k] > hi[k] else None
            if bound is None:
                continue
            gap = abs(bound - before[k])
            near = bool(np.isfinite(hi[k] - lo[k])) and gap < 1e-3 * (hi[k] - lo[k])
            t = min(t, (1.0 if near else 0.5) * gap / abs(step[k]))
        out = np.clip(before + t * step, lo, hi)
        run.at_bound = {p.name for k, p in enumerate(self.pars) if out[k] in (lo[k], hi[k])}
        return out

    def _geometry(self, before: np.ndarray, after: np.ndarray, halve: bool = True) -> np.ndarray | None:
        """``after``, or the step halved (up to 10 times) until the structure keeps the minimum distances
        and restraints; ``None`` when even the shortest step breaks them."""
        if self.geometry_ok is None or (self._positions is None and self.plan.lattice is None):
            return after
        for h in range(11 if halve else 1):
            trial = before + 0.5**h * (after - before)
            if self.geometry_ok(self.structure_at(trial)):
                return trial
        return None

    # ---- reading back -------------------------------------------------------------------------
    def structure_at(self, values: np.ndarray) -> Structure:
        """The structure at parameter ``values`` (cell, positions, per-site Uij)."""
        var = self._variables(values)
        ref = self.structure
        abc = [var.get(f"lat({i})", v) for i, v in enumerate(ref.lattice.abc, start=1)]
        angles = [var.get(f"lat({i})", v) for i, v in enumerate(ref.lattice.angles, start=4)]
        frac = np.array(ref.frac_coords, dtype=float)
        for i in range(len(ref)):
            for c, axis in enumerate("xyz"):
                frac[i, c] = var.get(f"{axis}({i + 1})", frac[i, c])
        props = dict(ref.site_properties)
        if self.plan.adp in ("site", "aniso") or ADP_PROPERTY in props:
            own = props.get(ADP_PROPERTY) or [None] * len(ref)
            adps = []
            for i in range(len(ref)):
                names = [f"{u}({i + 1})" for u in _UNAMES]
                if any(n in var for n in names):
                    adps.append([var.get(n, 0.0) for n in names])
                else:
                    adps.append(own[i])
            props[ADP_PROPERTY] = adps
        return Structure(
            Lattice.from_parameters(*abc, *angles),
            ref.species,
            frac,
            to_unit_cell=True,
            site_properties=props or None,
        )

    def _variables(self, values: np.ndarray) -> dict[str, float]:
        return {
            var: offset + sum(c * float(values[k - 1]) for k, c in coefs.items())
            for var, (offset, coefs) in self._formulas.items()
        }

    def _result(self, pf: PdfFit, values: np.ndarray, run: _Run) -> Refined:
        sigmas = {} if run.singular else _sigmas_of(pf)
        names = [p.name for p in self.pars]
        var = self._variables(values)
        sim = self.simulator
        settings: dict[str, Any] = {}
        for name in ("qdamp", "qbroad", "delta1", "delta2", "spdiameter"):
            if name in names:
                settings[name] = float(var[_VARS.get(name, name)])
        if self.plan.adp == "element":
            elements = sorted({site.specie.symbol for site in self.structure})
            biso = dict(sim.biso) if isinstance(sim.biso, dict) else dict.fromkeys(elements, float(sim.biso))
            for el in elements:
                name = f"{self.plan.adp_unit}_{el}"
                if name in names:
                    v = float(values[names.index(name)])
                    biso[el] = v if self.plan.adp_unit == "biso" else v * 8.0 * math.pi**2
            settings["biso"] = biso
        scale = float(var.get("dscale", 1.0))
        m = len(sim.r())
        model = np.asarray(pf.getpdf_fit(), dtype=float)[-m:]
        return Refined(
            values=dict(zip(names, (float(v) for v in values), strict=True)),
            sigmas={n: float(sigmas.get(k, 0.0)) for k, n in enumerate(names, start=1)},
            bounds={p.name: p.bounds for p in self.pars},
            at_bound=sorted(run.at_bound),
            rw=float(pf.getrw()),
            calls=int(run.calls),
            status=run.status,
            model=model,
            structure=self.structure_at(values),
            settings=settings,
            scale=scale,
            fixed=dict(self.fixed),
        )


def _sigmas_of(pf: PdfFit) -> dict[int, float]:
    """pdffit2's uncertainties, or none when this engine has not refined (nothing free, or a fresh
    engine after the last step: pdffit2 raises 'Refinement must be performed first')."""
    try:
        return _sigmas(pf.save_res_string())
    except Exception:  # pdffit2.unassignedError
        return {}


def _sigmas(res: str) -> dict[int, float]:
    """Parameter uncertainties from pdffit2's result text (``"  3: 2.21019 (0.17)"``; none when fixed)."""
    block = res.split("Refinement parameters :", 1)[-1].split("----", 1)[0]
    return {int(k): float(s) for k, _, s in re.findall(r"(\d+):\s+(\S+)\s+\(([^)]+)\)", block)}
