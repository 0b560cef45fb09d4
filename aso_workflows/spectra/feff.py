"""EXAFS χ(k) and XANES μ(E) with FEFF: one FEFF run per absorbing site, then an average.

Inputs are written with pymatgen's ``MPEXAFSSet``/``MPXANESSet`` (cards overridden through
``user_tag_settings``) on a supercell of the input structure, as in the reference implementation;
FEFF runs through :mod:`aso_workflows.spectra.feff_engine` (feff10-rs by default, or a FEFF
executable). Each absorber is self-contained in one directory — ``feff.inp`` plus
``aso_absorber.json`` (site, settings) — so the cluster workflow can run it as its own job:

>>> sim = EXAFSSimulator(absorber="Ni")
>>> d = sim.write_absorber_inputs(structure, site=3, directory="runs/site_0003")  # doctest: +SKIP
>>> site_spectrum = sim.run_absorber(d)                  # on any node, needs only the directory
>>> spectrum = sim.combine([site_spectrum, ...], [3, ...])

Measured on LiNiO2 (Ni K, one absorber, 2-core machine shared with other jobs; see
``benchmarks/simulators.py``): the EXAFS defaults (cluster 7 Å, RPATH 6 Å, NLEG 4, no SCF) take
3–5 s, of which ~1.2 s is the start-up of FEFF's 18 stage processes; pymatgen's ``MPEXAFSSet``
default (RPATH 10, NLEG 8) took 306 s and overflowed FEFF's path heap. The XANES reference settings
(cluster 6 Å, SCF 4.5 Å, FMS 4.5 Å) take ~80–120 s, >90 % of it in the SCF loop.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Element, Structure

from aso_workflows.errors import InputError, SimulationError
from aso_workflows.spectra.base import AbsorberSimulator
from aso_workflows.spectra.feff_engine import FeffEngine, log_tail, make_engine
from aso_workflows.spectra.spectrum import Grid, Spectrum
from aso_workflows.structures import structure_fingerprint

__all__ = [
    "EXAFSSimulator",
    "XANESSimulator",
    "ABSORBER_FILE",
    "ABSORBER_RESULT",
    "k_grid",
    "chir_magnitude",
    "xanes_energy_grid",
    "normalize_xmu",
    "supercell_site_map",
]

ABSORBER_FILE = "aso_absorber.json"
"""Written next to ``feff.inp``: the site (index in the input structure) and the FEFF settings."""
ABSORBER_RESULT = "aso_spectrum.json"
"""Written by :meth:`run_absorber` after a successful run: the per-site :class:`Spectrum`."""

EDGES: tuple[str, ...] = ("K", "L1", "L2", "L3", "M1", "M2", "M3", "M4", "M5")

# FEFF's free-electron relation E = ħ²k²/2m: 3.80998 eV Å².
_HBAR2_2M = 3.80998


# ---- grids and transforms ---------------------------------------------------------------------------
def k_grid(kmin: float, kmax: float, kstep: float) -> np.ndarray:
    """``kmin, kmin + kstep, … , kmax`` (both ends included; 181 points for 3–12 Å⁻¹ by 0.05)."""
    n = int(round((kmax - kmin) / kstep)) + 1
    return np.round(kmin + kstep * np.arange(n), 10)


def xanes_energy_grid(segments: Sequence[Sequence[float]]) -> np.ndarray:
    """Concatenated ``(start, stop, step)`` segments, each stop excluded except the last one's.

    The reference grid ``((-110, -20, 2), (-20, 30, 0.5), (30, 100, 1))`` gives 45 + 100 + 71 = 216
    points from −110 to 100 eV.
    """
    parts = []
    for i, (start, stop, step) in enumerate(segments):
        n = int(round((stop - start) / step))
        last = i == len(segments) - 1
        parts.append(start + step * np.arange(n + 1 if last else n))
    return np.round(np.concatenate(parts), 10)


def chir_magnitude(
    k: np.ndarray,
    chi_kw: np.ndarray,
    rmax: float,
    dk: float = 1.0,
    kstep: float = 0.05,
    nfft: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """|χ(R)| of a k-weighted χ(k): Hanning-windowed discrete Fourier transform.

    Same conventions as xraylarch's ``xftf`` (window ``"hanning"`` with sills of width ``dk``
    centred on the ends of the data range, χ(R) = kstep/√π · Σ w(k) k^w χ(k) e^{2ikR}, data placed
    on a uniform grid from k = 0 and zero-padded to ``nfft`` points, so R steps by π/(kstep·nfft)),
    so that |χ(R)| can be compared with Athena/Larch. Written with numpy instead of depending on
    xraylarch: the transform is a few lines, and xraylarch is a large install (GUI and FEFF binaries)
    needed for nothing else.

    Returns
    -------
    r, magnitude
        On ``0 ≤ R ≤ rmax`` (Å).
    """
    k = np.asarray(k, dtype=float)
    y = np.asarray(chi_kw, dtype=float)
    kmin, kmax = float(k[0]), float(k[-1])
    kk = kstep * np.arange(int(math.floor(kmax / kstep + 1e-6)) + 1)
    yy = np.where((kk >= kmin - 1e-9) & (kk <= kmax + 1e-9), np.interp(kk, k, y), 0.0)
    x1, x2, x3, x4 = kmin - dk / 2, kmin + dk / 2, kmax - dk / 2, kmax + dk / 2
    win = np.zeros_like(kk)
    win[(kk >= x2) & (kk <= x3)] = 1.0
    if dk > 0:
        lo = (kk >= x1) & (kk < x2)
        hi = (kk > x3) & (kk <= x4)
        win[lo] = np.sin(0.5 * np.pi * (kk[lo] - x1) / (x2 - x1)) ** 2
        win[hi] = np.cos(0.5 * np.pi * (kk[hi] - x3) / (x4 - x3)) ** 2
    ft = np.fft.fft(yy * win, n=nfft) * kstep / np.sqrt(np.pi)
    r = np.pi / (kstep * nfft) * np.arange(nfft // 2)
    keep = r <= rmax + 1e-9
    return r[keep], np.abs(ft[: nfft // 2])[keep]


def normalize_xmu(
    e: np.ndarray, mu: np.ndarray, post_edge: tuple[float, float] = (30.0, 100.0)
) -> tuple[np.ndarray, float]:
    """Edge-step normalised and flattened μ(E), as Athena/Larch's ``flat`` spectrum.

    FEFF computes the absorber's edge alone, so its μ has no pre-edge background (the pre-edge line
    of Athena-style normalisation is zero). A straight line is fitted to μ over ``post_edge`` (eV
    above E0); the edge step is that line at E0 (e = 0). Below E0 the result is μ / step; above E0
    the line's slope is removed as well (μ − line(e) + step) / step, so the post-edge oscillates
    around 1 (its mean over ``post_edge`` is exactly 1).

    Returns
    -------
    normalised μ, edge step
    """
    e = np.asarray(e, dtype=float)
    mu = np.asarray(mu, dtype=float)
    sel = (e >= post_edge[0]) & (e <= post_edge[1])
    if sel.sum() < 3:
        raise ValueError(f"fewer than 3 points of μ(E) between {post_edge[0]:g} and {post_edge[1]:g} eV")
    slope, intercept = np.polyfit(e[sel], mu[sel], 1)
    step = float(intercept)  # the line at e = 0
    if not np.isfinite(step) or step <= 0:
        raise ValueError(f"edge step is {step:g} (expected > 0)")
    flat = np.where(e > 0, mu - slope * e, mu) / step
    return flat, step


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


# ---- shared machinery ---------------------------------------------------------------------------------
def _number(name: str, value: Any, minimum: float | None = None, strict: bool = True) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"expected a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(name, f"expected a finite number, got {value!r}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise InputError(name, f"must be {'>' if strict else '≥'} {minimum:g}, got {v:g}")
    return v


class _FeffAbsorberSimulator(AbsorberSimulator):
    """What the EXAFS and XANES simulators share: site choice, inputs, the run, the directory format.

    Subclasses are dataclasses with at least the fields ``absorber, edge, supercell, sites, radius,
    scf, debye, seed, engine, timeout`` and implement :meth:`_feff_set`, :meth:`_tags`,
    :meth:`_parse` and :meth:`_combine_values`.
    """

    output_file: str = ""  # the FEFF output parsed (chi.dat or xmu.dat)

    # -- settings ---------------------------------------------------------------------------------
    def _validate_common(self) -> None:
        try:
            self.absorber = Element(str(self.absorber).strip().capitalize()).symbol
        except ValueError:
            raise InputError("absorber", f"{self.absorber!r} is not an element symbol") from None
        self.edge = str(self.edge).strip().upper()
        if self.edge not in EDGES:
            raise InputError("edge", f"unknown edge {self.edge!r}; expected one of {list(EDGES)}")
        try:
            sc = tuple(int(x) for x in self.supercell)
        except (TypeError, ValueError):
            raise InputError(
                "supercell", f"expected three positive integers, got {self.supercell!r}"
            ) from None
        if len(sc) != 3 or min(sc) < 1:
            raise InputError("supercell", f"expected three positive integers, got {self.supercell!r}")
        self.supercell = sc
        s = self.sites
        if isinstance(s, str):
            if s.strip().lower() != "all":
                raise InputError(
                    "sites", f"expected 'all', a number of sites or a list of site indices, got {s!r}"
                )
            self.sites = "all"
        elif isinstance(s, bool):
            raise InputError(
                "sites", f"expected 'all', a number of sites or a list of site indices, got {s!r}"
            )
        elif isinstance(s, (int, np.integer)):
            if s < 1:
                raise InputError("sites", f"the number of sites must be ≥ 1, got {s}")
            self.sites = int(s)
        else:
            try:
                lst = [int(i) for i in s]
            except (TypeError, ValueError):
                raise InputError(
                    "sites", f"expected 'all', a number of sites or a list of site indices, got {s!r}"
                ) from None
            if not lst or min(lst) < 0 or len(set(lst)) != len(lst):
                raise InputError("sites", f"expected a non-empty list of distinct indices ≥ 0, got {s!r}")
            self.sites = lst
        self.radius = _number("radius", self.radius, 0)
        if self.scf is not None:
            self.scf = _number("scf", self.scf, 0)
        if self.debye is not None:
            try:
                t, theta = (float(x) for x in self.debye)
            except (TypeError, ValueError):
                raise InputError(
                    "debye", f"expected [temperature, Debye temperature] in K or null, got {self.debye!r}"
                ) from None
            if t < 0 or theta <= 0:
                # θ_D = 0 is accepted by FEFF but gives an unbounded σ² that flattens the spectrum.
                raise InputError(
                    "debye", f"expected temperature ≥ 0 and Debye temperature > 0 K, got {self.debye!r}"
                )
            self.debye = (t, theta)
        self.seed = int(self.seed)
        self.keep_binaries = bool(self.keep_binaries)
        if self.timeout is not None:
            self.timeout = _number("timeout", self.timeout, 0)
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
        if self.sites == "all":
            return candidates
        if isinstance(self.sites, int):
            if self.sites > len(candidates):
                raise InputError(
                    "sites",
                    f"asks for {self.sites} {self.absorber} sites but the structure has {len(candidates)}",
                )
            rng = np.random.default_rng(self.seed)
            return sorted(int(i) for i in rng.choice(candidates, size=self.sites, replace=False))
        bad = [i for i in self.sites if i not in candidates]
        if bad:
            raise InputError(
                "sites",
                f"indices {bad} are not {self.absorber} sites of the structure (those are {candidates})",
            )
        return list(self.sites)

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
        except (ValueError, IndexError) as exc:
            raise SimulationError(f"cannot use {out.name} of {what} in {d}: {exc}") from None
        if not np.all(np.isfinite(values)):
            raise SimulationError(f"FEFF gave NaN or infinite values in {out.name} for {what} in {d}")
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

    def _scf_and_debye_tags(self, tags: dict, delete: list[str]) -> None:
        if self.scf is None:
            delete.append("SCF")
        else:
            tags["SCF"] = f"{self.scf:g} 0 30 0.2 1"  # reference: 4.5 0 30 .2 1 (max 30 iterations)
        if self.debye is not None:
            tags["DEBYE"] = f"{self.debye[0]:g} {self.debye[1]:g}"  # correlated Debye model


# ---- EXAFS ----------------------------------------------------------------------------------------------
@dataclass
class EXAFSSimulator(_FeffAbsorberSimulator):
    """EXAFS k^w·χ(k) averaged over absorbing sites, with FEFF path expansion (``MPEXAFSSet``).

    Parameters
    ----------
    absorber
        Absorbing element, e.g. ``"Ni"``.
    edge
        ``"K"``, ``"L3"`` ...
    supercell
        Repetitions of the cell before the clusters are cut (reference 2×2×2). pymatgen cuts the
        cluster from the periodic structure, so this changes the file header, not the physics.
    sites
        ``"all"`` absorbers of the element, an integer (that many, chosen at random with ``seed``),
        or a list of indices into the input structure.
    radius
        Cluster radius (Å) written to ``feff.inp`` (reference 10).
    rpath
        Longest half path length (FEFF ``RPATH``, Å; reference 10 via ``MPEXAFSSet``).
    nlegs
        Most legs per path (FEFF ``NLEG``; FEFF's default 8).
    scf
        Self-consistent potential radius (Å; ``SCF r 0 30 0.2 1``) or ``None`` for overlapped atomic
        potentials (reference 4.5; SCF changes EXAFS little, see METHOD.md, and costs ~100 s).
    debye
        ``(T, θ_D)`` in K for correlated-Debye-model Debye–Waller factors (FEFF ``DEBYE``), or
        ``None`` for none (the reference's ``MPEXAFSSet`` has none, giving undamped χ(k)).
    kmin, kmax, kstep
        The χ(k) grid (Å⁻¹): 3–12 by 0.05 is the reference's 181 points. FEFF runs to ``kmax``.
    kweight
        The spectrum is k^kweight·χ(k) (the reference used χ(k) itself: ``kweight=0``).
    rmax_ft, ft_dk
        |χ(R)| kept up to ``rmax_ft`` Å; Hanning sill width (Å⁻¹) of the transform window.
    seed
        Seed of the random subset when ``sites`` is an integer.
    engine
        ``"feff10-rs"`` or the path of a FEFF executable.
    timeout
        Wall-clock limit per absorber run in seconds (``None``: none).
    keep_binaries
        Keep FEFF's ``*.bin`` intermediates (~4 MB per run) instead of deleting them after a run.
    """

    absorber: str
    edge: str = "K"
    supercell: tuple[int, int, int] = (2, 2, 2)
    sites: str | int | list[int] = "all"
    radius: float = 7.0
    rpath: float = 6.0
    nlegs: int = 4
    scf: float | None = None
    debye: tuple[float, float] | None = (300.0, 500.0)
    kmin: float = 3.0
    kmax: float = 12.0
    kstep: float = 0.05
    kweight: float = 2.0
    rmax_ft: float = 6.0
    ft_dk: float = 1.0
    seed: int = 0
    engine: str = "feff10-rs"
    timeout: float | None = None
    keep_binaries: bool = False

    technique = "exafs"
    output_file = "chi.dat"

    def __post_init__(self) -> None:
        self._validate_common()
        self.rpath = _number("rpath", self.rpath, 0)
        nlegs = _number("nlegs", self.nlegs)
        if nlegs != int(nlegs) or nlegs < 2:
            raise InputError("nlegs", f"expected an integer ≥ 2, got {self.nlegs!r}")
        self.nlegs = int(nlegs)
        self.kmin = _number("kmin", self.kmin, 0, strict=False)
        self.kmax = _number("kmax", self.kmax, self.kmin)
        self.kstep = _number("kstep", self.kstep, 0)
        if (self.kmax - self.kmin) / self.kstep < 1:
            raise InputError("kstep", f"gives fewer than 2 points between kmin and kmax, got {self.kstep:g}")
        self.kweight = _number("kweight", self.kweight, 0, strict=False)
        self.rmax_ft = _number("rmax_ft", self.rmax_ft, 0)
        self.ft_dk = _number("ft_dk", self.ft_dk, 0, strict=False)
        if self.kmax > 20:
            raise InputError("kmax", f"FEFF's EXAFS card goes to 20 Å⁻¹ at most, got {self.kmax:g}")

    def k(self) -> np.ndarray:
        """The k grid (Å⁻¹)."""
        return k_grid(self.kmin, self.kmax, self.kstep)

    def grid(self) -> Grid:
        return Grid(name="k", unit="Å^-1", values=self.k().tolist())

    def _feff_set(self) -> type:
        from pymatgen.io.feff.sets import MPEXAFSSet

        return MPEXAFSSet

    def _tags(self) -> dict:
        tags: dict = {"RPATH": self.rpath, "NLEG": self.nlegs, "EXAFS": self.kmax}
        delete: list[str] = []
        self._scf_and_debye_tags(tags, delete)
        if delete:
            tags["_del"] = delete
        return tags

    def chir(self, values: np.ndarray) -> dict:
        """``{"r": [...], "chir_mag": [...]}`` of k^w·χ(k) values on :meth:`k`."""
        r, mag = chir_magnitude(self.k(), values, self.rmax_ft, dk=self.ft_dk, kstep=self.kstep)
        return {"r": r.tolist(), "chir_mag": mag.tolist()}

    def _parse(self, data: np.ndarray) -> tuple[np.ndarray, dict]:
        # chi.dat columns: k, χ, |χ|, phase
        kf, chi = data[:, 0], data[:, 1]
        k = self.k()
        if kf[0] > k[0] + 1e-6 or kf[-1] < k[-1] - 1e-6:
            raise ValueError(f"χ(k) covers [{kf[0]:g}, {kf[-1]:g}] Å⁻¹, not the grid [{k[0]:g}, {k[-1]:g}]")
        values = np.interp(k, kf, chi) * k**self.kweight
        return values, self.chir(values)

    def _combine_values(self, spectra: list[Spectrum]) -> tuple[np.ndarray, dict]:
        per_site = np.array([s.values for s in spectra], dtype=float)
        return per_site, self.chir(per_site.mean(axis=0))


# ---- XANES ----------------------------------------------------------------------------------------------
@dataclass
class XANESSimulator(_FeffAbsorberSimulator):
    """XANES: normalised μ(E) on an energy grid relative to the edge, averaged over absorbing sites.

    FEFF full multiple scattering (``MPXANESSet``), reported on the reference grid −110…100 eV
    around E0 (E0 is FEFF's edge energy, ``omega − e`` of ``xmu.dat``; kept in ``extra["e0"]``).

    FEFF's XANES grid starts ~6 eV below E0. Below its first point the normalised μ is continued
    by the asymptotic tail of a Lorentzian-broadened edge step, μ ∝ 1/|e| (matched to FEFF's first
    point; ≈ 0.004 at −110 eV): FEFF computes only the absorber's edge, whose absorption below the
    edge is nothing but that tail. FEFF's own ``EGRID`` card would reach −110 eV, but in FEFF 10.0
    via feff10-rs 0.2.4 it gives NaN (grids starting at −30 or −15 eV, including FEFF's documented
    example) or a negative pre-edge (starting at −110 eV), so it is not used.

    Parameters
    ----------
    absorber, edge, supercell, sites, seed, engine, timeout, keep_binaries
        As for :class:`EXAFSSimulator`.
    radius
        Cluster radius (Å; reference 6).
    fms
        Full-multiple-scattering radius (Å; FEFF ``FMS r 0``; reference 4.5).
    scf
        Self-consistent potential radius (Å; reference 4.5) or ``None`` (cheaper, shifts E0 by ~10 eV).
    debye
        ``(T, θ_D)`` in K (FEFF ``DEBYE T θ_D``, correlated Debye model) or ``None``. The reference's
        ``DEBYE 300 0 1`` does not run in FEFF 10 (method 1 needs a ``spring.inp``) and θ_D = 0 gives
        an unbounded σ² that wipes out the fine structure, so a finite θ_D is the default.
    egrid
        ``(start, stop, step)`` segments of the output grid in eV relative to E0 (reference).
    post_edge
        Energy range (eV above E0) of the post-edge line that defines the edge step (normalisation).
    """

    absorber: str
    edge: str = "K"
    supercell: tuple[int, int, int] = (2, 2, 2)
    sites: str | int | list[int] = "all"
    radius: float = 6.0
    fms: float = 4.5
    scf: float | None = 4.5
    debye: tuple[float, float] | None = (300.0, 500.0)
    egrid: tuple[tuple[float, float, float], ...] = (
        (-110.0, -20.0, 2.0),
        (-20.0, 30.0, 0.5),
        (30.0, 100.0, 1.0),
    )
    post_edge: tuple[float, float] = (30.0, 100.0)
    seed: int = 0
    engine: str = "feff10-rs"
    timeout: float | None = None
    keep_binaries: bool = False

    technique = "xanes"
    output_file = "xmu.dat"

    def __post_init__(self) -> None:
        self._validate_common()
        self.fms = _number("fms", self.fms, 0)
        try:
            segs = tuple(tuple(float(x) for x in seg) for seg in self.egrid)
        except (TypeError, ValueError):
            raise InputError("egrid", f"expected [start, stop, step] segments, got {self.egrid!r}") from None
        if not segs or any(len(s) != 3 or s[2] <= 0 or s[1] <= s[0] for s in segs):
            raise InputError(
                "egrid",
                f"expected [start, stop, step] segments with stop > start, step > 0, got {self.egrid!r}",
            )
        if any(a[1] != b[0] for a, b in zip(segs[:-1], segs[1:], strict=False)):
            raise InputError(
                "egrid", f"each segment must start where the previous one stops, got {self.egrid!r}"
            )
        if segs[0][0] >= 0 or segs[-1][1] <= 0:
            raise InputError("egrid", "the grid must span the edge (start < 0 < stop)")
        self.egrid = segs
        try:
            lo, hi = (float(x) for x in self.post_edge)
        except (TypeError, ValueError):
            raise InputError(
                "post_edge", f"expected [low, high] in eV above E0, got {self.post_edge!r}"
            ) from None
        if not 0 < lo < hi:
            raise InputError("post_edge", f"expected 0 < low < high (eV above E0), got {self.post_edge!r}")
        self.post_edge = (lo, hi)

    def e(self) -> np.ndarray:
        """The energy grid relative to E0 (eV)."""
        return xanes_energy_grid(self.egrid)

    def grid(self) -> Grid:
        return Grid(name="e", unit="eV", values=self.e().tolist())

    def _feff_set(self) -> type:
        from pymatgen.io.feff.sets import MPXANESSet

        return MPXANESSet

    def xkmax(self) -> float:
        """FEFF's ``XANES`` k range (Å⁻¹), enough for the grid and the post-edge fit.

        FEFF counts this k from its Fermi level, not from E0 (with SCF the Fermi level drops by
        ~12 eV for LiNiO2 and a 5.4 Å⁻¹ range stopped at 99 eV above E0): 30 eV of margin.
        """
        emax = max(self.egrid[-1][1], self.post_edge[1]) + 30.0
        return math.ceil(10 * math.sqrt(emax / _HBAR2_2M)) / 10

    def _tags(self) -> dict:
        # MPXANESSet's LDOS card only adds l-projected DOS (13 s for LiNiO2): not needed for μ(E).
        tags: dict = {"FMS": f"{self.fms:g} 0", "XANES": f"{self.xkmax():g} 0.04 0.1"}
        delete = ["LDOS"]
        self._scf_and_debye_tags(tags, delete)
        tags["_del"] = delete
        return tags

    def _parse(self, data: np.ndarray) -> tuple[np.ndarray, dict]:
        # xmu.dat columns: omega (absolute eV), e (relative to the edge), k, μ, μ0, χ
        omega, e, mu = data[:, 0], data[:, 1], data[:, 3]
        e0 = float(omega[0] - e[0])
        norm, step = normalize_xmu(e, mu, self.post_edge)
        grid = self.e()
        if e[-1] < grid[-1] - 1e-6:
            raise ValueError(f"μ(E) stops at {e[-1]:g} eV, below the grid's end {grid[-1]:g} eV")
        if e[0] >= 0:
            raise ValueError(f"μ(E) starts above the edge ({e[0]:g} eV)")
        values = np.interp(grid, e, norm)
        below = grid < e[0]
        values[below] = norm[0] * e[0] / grid[below]  # Lorentzian tail ∝ 1/|e| (class docstring)
        return values, {"e0": e0, "edge_step": step}

    def _combine_values(self, spectra: list[Spectrum]) -> tuple[np.ndarray, dict]:
        # Sites can have different E0 (chemical shifts): put each on the common reference (the mean
        # E0) before averaging, i.e. average on the absolute energy scale.
        e0s = np.array([float(s.extra.get("e0", np.nan)) for s in spectra])
        if not np.all(np.isfinite(e0s)):
            raise InputError("site_spectra", "every XANES site spectrum needs extra['e0']")
        e0 = float(e0s.mean())
        grid = self.e()
        per_site = np.array(
            [np.interp(grid + (e0 - e0_i), grid, s.values) for s, e0_i in zip(spectra, e0s, strict=True)]
        )
        return per_site, {"e0": e0, "site_e0": e0s.tolist()}
