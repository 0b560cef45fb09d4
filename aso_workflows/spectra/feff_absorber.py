"""FEFF absorber runs: what the EXAFS and XANES simulators share.

Inputs are written with pymatgen's ``MPEXAFSSet``/``MPXANESSet`` (cards overridden through
``user_tag_settings``) on a supercell of the input structure, as in the reference implementation;
FEFF runs through :mod:`aso_workflows.spectra.feff_engine` (feff10-rs by default, or a FEFF
executable). Each absorber is self-contained in one directory — ``feff.inp`` plus
``aso_absorber.json`` (site, settings) — so the cluster workflow can run it as its own job:

>>> sim = EXAFSSimulator(absorber="Ni")
>>> d = sim.write_absorber_inputs(structure, site=3, directory="runs/site_0003")  # doctest: +SKIP
>>> site_spectrum = sim.run_absorber(d)                  # on any node, needs only the directory
>>> spectrum = sim.combine([site_spectrum, ...], [3, ...])

The simulators themselves are in :mod:`~aso_workflows.spectra.exafs` and
:mod:`~aso_workflows.spectra.xanes`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field
from pymatgen.core import Element, Structure

from aso_workflows.errors import InputError, SimulationError
from aso_workflows.spectra.base import AbsorberSimulator
from aso_workflows.spectra.feff_engine import FeffEngine, log_tail, make_engine
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.structures import structure_fingerprint

__all__ = [
    "FeffAbsorberSimulator",
    "ABSORBER_FILE",
    "ABSORBER_RESULT",
    "EDGES",
    "supercell_site_map",
    "AbsorberElement",
    "Edge",
    "Supercell",
    "Sites",
    "Debye",
    "EngineName",
    "Positive",
    "NonNegative",
]

ABSORBER_FILE = "aso_absorber.json"
"""Written next to ``feff.inp``: the site (index in the input structure) and the FEFF settings."""
ABSORBER_RESULT = "aso_spectrum.json"
"""Written by :meth:`FeffAbsorberSimulator.run_absorber` after a successful run: the per-site :class:`Spectrum`."""

EDGES: tuple[str, ...] = ("K", "L1", "L2", "L3", "M1", "M2", "M3", "M4", "M5")


def supercell_site_map(structure: Structure, supercell: Structure) -> list[int]:
    """For each site of ``structure``, the index of the same atom (zero translation) in ``supercell``.

    Found by position (periodic distance in the supercell, must be < 0.01 Å) and checked by
    species, so it does not rely on pymatgen's ordering of supercell sites.
    """
    frac = supercell.lattice.get_fractional_coords(structure.cart_coords)
    d = supercell.lattice.get_all_distances(frac, supercell.frac_coords)
    idx = np.argmin(d, axis=1)
    out = []
    for i, j in enumerate(idx):
        if d[i, j] > 1e-2 or supercell[int(j)].specie != structure[i].specie:
            raise SimulationError(f"site {i} of the structure has no image in its supercell")
        out.append(int(j))
    return out


def _element(v: Any) -> str:
    try:
        return Element(str(v).strip().capitalize()).symbol
    except ValueError:
        raise ValueError(f"{v!r} is not an element symbol") from None


def _edge(v: Any) -> str:
    edge = str(v).strip().upper()
    if edge not in EDGES:
        raise ValueError(f"unknown edge {v!r}; expected one of {list(EDGES)}")
    return edge


def _supercell(v: Any) -> tuple[int, int, int]:
    try:
        sc = tuple(int(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"expected three positive integers, got {v!r}") from None
    if len(sc) != 3 or min(sc) < 1:
        raise ValueError(f"expected three positive integers, got {v!r}")
    return sc


def _sites(v: Any) -> str | int | list[int]:
    what = f"expected 'all', a number of sites or a list of site indices, got {v!r}"
    if isinstance(v, str):
        if v.strip().lower() != "all":
            raise ValueError(what)
        return "all"
    if isinstance(v, bool):
        raise ValueError(what)
    if isinstance(v, (int, np.integer)):
        if v < 1:
            raise ValueError(f"the number of sites must be ≥ 1, got {v}")
        return int(v)
    try:
        lst = [int(i) for i in v]
    except (TypeError, ValueError):
        raise ValueError(what) from None
    if not lst or min(lst) < 0 or len(set(lst)) != len(lst):
        raise ValueError(f"expected a non-empty list of distinct indices ≥ 0, got {v!r}")
    return lst


def _debye(v: Any) -> tuple[float, float] | None:
    if v is None:
        return None
    try:
        t, theta = (float(x) for x in v)
    except (TypeError, ValueError):
        raise ValueError(f"expected [temperature, Debye temperature] in K or null, got {v!r}") from None
    if t < 0 or theta <= 0:
        # θ_D = 0 is accepted by FEFF but gives an unbounded σ² that flattens the spectrum.
        raise ValueError(f"expected temperature ≥ 0 and Debye temperature > 0 K, got {v!r}")
    return (t, theta)


def _engine(v: Any) -> str:
    try:
        make_engine(v)
    except InputError as exc:
        raise ValueError(exc.problem) from None
    return str(v)


# Field types of the FEFF simulators (pydantic validates them: one error naming the setting).
AbsorberElement = Annotated[str, BeforeValidator(_element)]
Edge = Annotated[str, BeforeValidator(_edge)]
Supercell = Annotated[tuple[int, int, int], BeforeValidator(_supercell)]
Sites = Annotated[str | int | list[int], BeforeValidator(_sites)]
Debye = Annotated[tuple[float, float] | None, BeforeValidator(_debye)]
EngineName = Annotated[str, BeforeValidator(_engine)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class FeffAbsorberSimulator(AbsorberSimulator):
    """What the EXAFS and XANES simulators share: site choice, inputs, the run, the directory format.

    Subclasses are :func:`~aso_workflows.settings.settings_dataclass` es with at least the fields
    ``absorber, edge, supercell, sites, radius, scf, debye, seed, engine, timeout, keep_binaries``
    (typed with this module's :data:`AbsorberElement`, :data:`Sites` ...) and implement
    :meth:`_feff_set`, :meth:`_tags`, :meth:`_parse` and :meth:`_combine_values`.
    """

    output_file: str = ""  # the FEFF output parsed (chi.dat or xmu.dat)

    # The settings the shared code reads: fields of every subclass (declared there with their validators).
    edge: str
    supercell: tuple[int, int, int]
    sites: str | int | list[int]
    radius: float
    scf: float | None
    debye: tuple[float, float] | None
    seed: int
    engine: str
    timeout: float | None
    keep_binaries: bool

    def __post_init__(self) -> None:
        # after pydantic validated the fields: the engine object (not a field, never serialised)
        self._engine: FeffEngine = make_engine(self.engine)

    def settings_dict(self) -> dict:
        """Settings stored with every spectrum, less ``timeout``/``keep_binaries`` (they do not change results)."""
        d = super().settings_dict()
        d.pop("timeout", None)
        d.pop("keep_binaries", None)
        return d

    def engine_version(self) -> str:
        return self._engine.version()

    @property
    def engine_object(self) -> FeffEngine:
        """The :class:`FeffEngine` that runs FEFF."""
        return self._engine

    def _feff_settings(self) -> dict:
        """Everything that decides ``feff.inp`` (checked again by :meth:`run_absorber`)."""
        return {
            "technique": self.technique,
            "input_set": self._feff_set().__name__,
            "absorber": self.absorber,
            "edge": self.edge,
            "radius": self.radius,
            "supercell": list(self.supercell),
            "tags": self._tags(),
        }

    # -- sites ------------------------------------------------------------------------------------
    def _element_sites(self, structure: Structure) -> list[int]:
        idx = [i for i, site in enumerate(structure) if site.specie.symbol == self.absorber]
        if not idx:
            formula = structure.composition.reduced_formula
            elements = sorted({el.symbol for el in structure.composition.elements})
            raise InputError(
                "absorber",
                f"no {self.absorber} atoms in the structure ({formula}); expected one of its elements {elements}",
            )
        return idx

    def absorber_sites(self, structure: Structure) -> list[int]:
        """Indices (in ``structure``) of the absorbers to compute: all, a seeded random subset, or a list.

        Raises
        ------
        InputError
            On ``absorber`` if the element is absent; on ``sites`` if the request does not fit.
        """
        candidates = self._element_sites(structure)
        sites = self.sites
        if isinstance(sites, str):  # the field's validator turns every string into "all"
            return candidates
        if isinstance(sites, int):
            if sites > len(candidates):
                raise InputError(
                    "sites",
                    f"asks for {sites} {self.absorber} sites but the structure has {len(candidates)}",
                )
            rng = np.random.default_rng(self.seed)
            return sorted(int(i) for i in rng.choice(candidates, size=sites, replace=False))
        bad = [i for i in sites if i not in candidates]
        if bad:
            raise InputError(
                "sites",
                f"indices {bad} are not {self.absorber} sites of the structure (those are {candidates})",
            )
        return list(sites)

    # -- one absorber -----------------------------------------------------------------------------
    def write_absorber_inputs(self, structure: Structure, site: int, directory: str | Path) -> Path:
        """Write ``feff.inp`` (pymatgen input set on the supercell) and :data:`ABSORBER_FILE`.

        Parameters
        ----------
        structure
            The input structure (not the supercell).
        site
            Index in ``structure`` of the absorbing atom.
        directory
            Created if needed; FEFF will run there.
        """
        candidates = self._element_sites(structure)
        site = int(site)
        if site not in candidates:
            raise InputError(
                "sites", f"site {site} is not a {self.absorber} site of the structure ({candidates})"
            )
        supercell = structure * self.supercell
        sc_site = supercell_site_map(structure, supercell)[site]
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        input_set = self._feff_set()(
            sc_site, supercell, edge=self.edge, radius=self.radius, user_tag_settings=self._tags()
        )
        with warnings.catch_warnings():
            # pymatgen warns about symmetry tolerance on distorted cells; the header is only a comment
            warnings.simplefilter("ignore")
            input_set.write_input(str(d))
        meta = {
            "site": site,
            "supercell_site": sc_site,
            "structure_fingerprint": structure_fingerprint(structure),
            "feff_settings": self._feff_settings(),
            "settings": self.settings_dict(),
        }
        (d / ABSORBER_FILE).write_text(json.dumps(meta, indent=1))
        return d

    def _read_meta(self, d: Path) -> dict:
        p = d / ABSORBER_FILE
        if not p.is_file():
            raise InputError(p, "not found; write_absorber_inputs() writes it next to feff.inp")
        try:
            meta = json.loads(p.read_text())
            int(meta["site"])
            mine = json.loads(json.dumps(self._feff_settings()))
            theirs = meta["feff_settings"]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(p, f"not a valid absorber description ({type(exc).__name__}: {exc})") from None
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise InputError(p, f"written with other FEFF settings than this simulator's (differ in {diff})")
        return meta

    def run_absorber(self, directory: str | Path) -> Spectrum:
        """Run FEFF in ``directory`` (written by :meth:`write_absorber_inputs`) and parse its output.

        Needs nothing but the directory and this simulator's settings. Writes the per-site spectrum
        to :data:`ABSORBER_RESULT` there as well.

        Raises
        ------
        SimulationError
            FEFF failed, timed out, or its output is missing or not finite (site, directory, reason).
        InputError
            The directory does not hold an absorber written with these settings.
        """
        d = Path(directory).resolve()
        meta = self._read_meta(d)
        site = int(meta["site"])
        what = f"site {site} ({self.absorber} {self.edge} {self.technique.upper()})"
        for stale in ("chi.dat", "xmu.dat", ABSORBER_RESULT):
            (d / stale).unlink(missing_ok=True)
        for stale_path in d.glob("feff[0-9][0-9][0-9][0-9].dat"):  # per-path files of an earlier run
            stale_path.unlink(missing_ok=True)
        self._engine.run(d, timeout=self.timeout, what=what)
        out = d / self.output_file
        if not out.is_file():
            tail = log_tail(d)
            raise SimulationError(
                f"FEFF wrote no {self.output_file} for {what} in {d}"
                + (f"; last log lines: {tail}" if tail else "")
            )
        try:
            data = np.loadtxt(out, comments="#", ndmin=2)
            values, extra = self._parse(data)
        except (ValueError, IndexError, SimulationError) as exc:  # a table numpy cannot read, or unusable
            raise SimulationError(f"cannot use {out.name} of {what} in {d}: {exc}") from None
        if not np.all(np.isfinite(values)):
            raise SimulationError(f"FEFF gave NaN or infinite values in {out.name} for {what} in {d}")
        extra.update(self._run_outputs(d, site))
        spectrum = Spectrum(
            technique=self.technique,
            grid=self.grid(),
            values=values.tolist(),
            absorber=self.absorber,
            edge=self.edge,
            absorber_sites=[site],
            site_values=[values.tolist()],
            settings=self.settings_dict(),
            engine=self.engine_version(),
            extra=extra,
        )
        spectrum.to_json_file(d / ABSORBER_RESULT)
        if not self.keep_binaries:
            # FEFF's *.bin intermediates are ~90 % of the ~5 MB a run leaves behind
            for b in d.glob("*.bin"):
                b.unlink(missing_ok=True)
        return spectrum

    def combine(self, site_spectra: Sequence[Spectrum], sites: Sequence[int]) -> Spectrum:
        """Average per-site spectra; keeps them in ``site_values`` (order of ``sites``)."""
        if len(site_spectra) == 0 or len(site_spectra) != len(sites):
            raise InputError(
                "site_spectra",
                f"expected one spectrum per site, got {len(site_spectra)} for {len(sites)} sites",
            )
        per_site, extra = self._combine_values(list(site_spectra))
        mean = per_site.mean(axis=0)
        return Spectrum(
            technique=self.technique,
            grid=self.grid(),
            values=mean.tolist(),
            absorber=self.absorber,
            edge=self.edge,
            absorber_sites=[int(s) for s in sites],
            site_values=per_site.tolist(),
            settings=self.settings_dict(),
            engine=self.engine_version(),
            extra=extra,
        )

    # -- technique-specific -----------------------------------------------------------------------
    def _feff_set(self) -> type:
        raise NotImplementedError

    def _tags(self) -> dict:
        raise NotImplementedError

    def _parse(self, data: np.ndarray) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def _combine_values(self, spectra: list[Spectrum]) -> tuple[np.ndarray, dict]:
        raise NotImplementedError

    def _run_outputs(self, directory: Path, site: int) -> dict:
        """More of a finished run to keep in the spectrum's ``extra`` (EXAFS: the scattering paths)."""
        return {}

    def _scf_and_debye_tags(self, tags: dict, delete: list[str]) -> None:
        if self.scf is None:
            delete.append("SCF")
        else:
            tags["SCF"] = f"{self.scf:g} 0 30 0.2 1"  # reference: 4.5 0 30 .2 1 (max 30 iterations)
        if self.debye is not None:
            tags["DEBYE"] = f"{self.debye[0]:g} {self.debye[1]:g}"  # correlated Debye model
