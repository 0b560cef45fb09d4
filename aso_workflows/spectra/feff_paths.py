"""FEFF scattering paths of an absorber run, kept with the simulation for FEFFIT-grade fits.

FEFF writes one ``feffNNNN.dat`` per scattering path (its effective amplitude, phase shifts, mean free
path and geometry) when the last number of its ``PRINT`` card (the ``ff2x`` print level) is 3 or more;
:class:`~aso_workflows.spectra.exafs.EXAFSSimulator` sets it with ``keep_paths: true``. The files are
parsed by xraylarch's own ``FeffDatFile`` (what Larch's ``feffpath`` does) and stored as
:class:`FeffPath` documents in the spectrum's ``extra["feff_paths"]`` (the campaign store moves them to
its blob store: ``docs/results.md``). :meth:`FeffPath.larch_path` rebuilds Larch's ``FeffPathGroup``
from a stored path without any file, with path parameters (S0², E0, ΔR, σ² ...) given as numbers or
Larch expressions, so Larch's own EXAFS equation computes χ(k).

Stored per path (names as in Larch's ``FeffDatFile``): the absorber site it belongs to, ``index``
(NNNN), ``nleg``, ``degen``, ``reff`` (Å), the atoms of the path (``geom``: symbol, Z, ipot, mass, x, y, z
in Å with the absorber at the origin), FEFF's header values and the seven columns of the file on FEFF's
k grid: ``k``, ``real_phc`` (2× the central-atom phase), ``mag_feff``, ``pha_feff``, ``red_fact``,
``lam`` (mean free path, Å) and ``rep`` (real part of the complex momentum).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from aso_workflows.errors import SimulationError

__all__ = [
    "FeffPath",
    "read_feff_paths",
    "read_chi_paths",
    "PATH_FILE",
    "FF2X_PRINT_PATHS",
    "paths_of",
    "first_shell",
]

PATH_FILE = re.compile(r"^feff(\d{4})\.dat$")
"""FEFF's per-path files."""
FF2X_PRINT_PATHS = 3
"""The ``ff2x`` print level (last number of FEFF's ``PRINT`` card) from which ``feffNNNN.dat`` are written."""

_ARRAYS = ("k", "real_phc", "mag_feff", "pha_feff", "red_fact", "lam", "rep")


class FeffPath(BaseModel):
    """One ``feffNNNN.dat`` of one absorber (see the module docstring for the fields)."""

    model_config = ConfigDict(extra="forbid")

    site: int
    index: int
    nleg: int
    degen: float
    reff: float
    geom: list[tuple[str, int, int, float, float, float, float]]
    header: dict[str, Any]
    k: list[float]
    real_phc: list[float]
    mag_feff: list[float]
    pha_feff: list[float]
    red_fact: list[float]
    lam: list[float]
    rep: list[float]

    @property
    def label(self) -> str:
        """``s<site>p<index>``: unique in a candidate (Larch's own labels hash the geometry only)."""
        return f"s{self.site}p{self.index}"

    def distances(self) -> list[float]:
        """The leg lengths of the path (Å), from its geometry."""
        xyz = np.array([g[4:7] for g in self.geom], dtype=float)
        ring = np.vstack([xyz, xyz[:1]])
        return np.linalg.norm(np.diff(ring, axis=0), axis=1).tolist()

    @classmethod
    def from_larch(cls, fdat: Any, site: int, index: int) -> FeffPath:
        """From Larch's ``FeffDatFile`` (a parsed ``feffNNNN.dat``)."""
        header = {
            name: getattr(fdat, name, None)
            for name in (
                "title",
                "version",
                "shell",
                "absorber",
                "rnorman",
                "edge",
                "gam_ch",
                "exch",
                "vmu",
                "vfermi",
                "vint",
                "rs_int",
            )
        }
        header["potentials"] = [list(p) for p in getattr(fdat, "potentials", [])]
        geom = [
            (str(a), int(z), int(ip), float(m), float(x), float(y), float(zz))
            for a, z, ip, m, x, y, zz in fdat.geom
        ]
        arrays = {name: np.asarray(getattr(fdat, name), dtype=float).tolist() for name in _ARRAYS}
        return cls(
            site=site,
            index=index,
            nleg=int(fdat.nleg),
            degen=float(fdat.degen),
            reff=float(fdat.reff),
            geom=geom,
            header=header,
            **arrays,
        )

    def larch_path(self, label: str | None = None, degen: float | None = None, **params: Any) -> Any:
        """Larch's ``FeffPathGroup`` for this path (no file needed).

        Parameters
        ----------
        label
            The path's label (default :attr:`label`).
        degen
            Degeneracy to use (default FEFF's), e.g. divided by the number of absorbers averaged.
        **params
            Larch path parameters: ``s02``, ``e0``, ``deltar``, ``sigma2``, ``third``, ``fourth``, ``ei``
            as numbers or expressions of fit parameters (``"expansion*reff"``, ``"sigma2_debye(temp, theta)"``).
        """
        stored_dat, stored_path = _larch_classes()
        h = self.header
        fdat = stored_dat()
        k = np.asarray(self.k, dtype=float)
        arrays = [np.asarray(getattr(self, n), dtype=float) for n in _ARRAYS[1:]]
        real_phc, mag, pha, red, lam, rep = arrays
        geom = [(a, z, ip, m, f"{x:8.5f}", f"{y:8.5f}", f"{zz:8.5f}") for a, z, ip, m, x, y, zz in self.geom]
        # FeffDatFile's own pickling state: (filename, title, version, shell, absorber, degen, reff, nleg,
        # rnorman, edge, gam_ch, exch, vmu, vfermi, vint, rs_int, potentials, geom, rmass, k, real_phc,
        # mag_feff, pha_feff, red_fact, lam, rep, pha, amp)
        fdat.__setstate__(
            (
                None, h.get("title"), h.get("version"), h.get("shell"), h.get("absorber"), self.degen,
                self.reff, self.nleg, h.get("rnorman"), h.get("edge"), h.get("gam_ch"), h.get("exch"),
                h.get("vmu"), h.get("vfermi"), h.get("vint"), h.get("rs_int"),
                [tuple(p) for p in h.get("potentials", [])], geom, None, k, real_phc, mag, pha, red, lam,
                rep, real_phc + pha, mag * red,
            )
        )  # fmt: skip
        name = label or self.label
        path = stored_path(
            filename=f"site{self.site:04d}/feff{self.index:04d}.dat",
            label=name,
            _feffdat=fdat,
            degen=degen,
            **params,
        )
        return path


@functools.cache
def _larch_classes() -> tuple[type, type]:
    """Larch's ``FeffDatFile`` and ``FeffPathGroup`` for paths held in memory.

    Larch copies a ``FeffDatFile`` by reading its file again (``FeffDatFile(filename=...)``), and lmfit
    deep-copies the parameters' symbol table, which holds the current path: a path without a file
    would be copied empty and Larch's σ² models (``sigma2_debye`` reads the path's geometry) fail.
    These subclasses copy the data instead; everything else is Larch's.
    """
    from larch.xafs.feffdat import FeffDatFile, FeffPathGroup

    class StoredFeffDat(FeffDatFile):
        def __copy__(self) -> StoredFeffDat:
            new = StoredFeffDat()
            new.__setstate__(self.__getstate__())
            return new

        def __deepcopy__(self, memo: dict) -> StoredFeffDat:
            return self.__copy__()

    class StoredFeffPath(FeffPathGroup):
        def __setstate__(self, state: Any) -> None:
            super().__setstate__(state)
            self._feffdat.__class__ = StoredFeffDat  # Larch rebuilds a plain FeffDatFile: same data

        def __copy__(self) -> StoredFeffPath:
            new = StoredFeffPath()
            new.__setstate__(self.__getstate__())
            return new

        def __deepcopy__(self, memo: dict) -> StoredFeffPath:
            return self.__copy__()

    # Larch recognises its groups by class name (larch.larchlib.isNamedClass): keep Larch's names
    StoredFeffDat.__name__ = StoredFeffDat.__qualname__ = "FeffDatFile"
    StoredFeffPath.__name__ = StoredFeffPath.__qualname__ = "FeffPathGroup"
    return StoredFeffDat, StoredFeffPath


def read_feff_paths(directory: str | Path, site: int) -> list[FeffPath]:
    """Every ``feffNNNN.dat`` of a FEFF run in ``directory``, parsed by Larch, in path order.

    Raises
    ------
    SimulationError
        FEFF wrote no path file (the ``PRINT`` card did not ask for them, or no path is shorter than
        ``RPATH``) or one Larch cannot parse.
    InputError
        xraylarch is not installed.
    """
    from aso_workflows.spectra.xraylarch import larch_modules, quiet

    larch_modules("settings.keep_paths")
    from larch.xafs.feffdat import FeffDatFile

    d = Path(directory)
    files = sorted(p for p in d.iterdir() if PATH_FILE.match(p.name))
    if not files:
        raise SimulationError(
            f"FEFF wrote no feffNNNN.dat in {d} (no scattering path within RPATH, or PRINT's ff2x level < {FF2X_PRINT_PATHS})"
        )
    out = []
    for f in files:
        try:
            with quiet():
                fdat = FeffDatFile(filename=str(f))
            path = FeffPath.from_larch(fdat, site, int(PATH_FILE.match(f.name).group(1)))  # type: ignore[union-attr]
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise SimulationError(f"cannot parse {f.name} in {d}: {exc}") from None
        out.append(path)
    return out


def paths_of(extra: dict) -> list[FeffPath]:
    """The :class:`FeffPath` documents kept in a spectrum's ``extra`` (``[]`` when none)."""
    return [FeffPath.model_validate(p) for p in extra.get("feff_paths") or []]


def first_shell(paths: Sequence[FeffPath], tolerance: float = 0.1) -> list[FeffPath]:
    """The single-scattering paths within ``tolerance`` Å of the shortest one (the nearest neighbours)."""
    single = [p for p in paths if p.nleg == 2]
    if not single:
        return []
    r0 = min(p.reff for p in single)
    return [p for p in single if p.reff <= r0 + tolerance]


_CHI_S02 = re.compile(r"^#\s*S02=\s*([-+0-9.Ee]+)", re.M)
_CHI_PATH = re.compile(
    r"^#\s+(\d+)\s+([-+0-9.Ee]+)\s+[-+0-9.Ee]+\s+[-+0-9.Ee]+\s+\d+\s+[-+0-9.Ee]+\s*$", re.M
)


def read_chi_paths(chi_dat: str | Path, site: int) -> dict[str, Any]:
    """What FEFF's ``chi.dat`` header says of the sum it made: ``{"site", "s02", "sig2": {index: σ²}}``.

    ``chi.dat`` is the sum of the paths listed there (those that passed FEFF's curved-wave importance
    filter, with the σ² of its ``DEBYE`` model and the S0² it computed when ``S02 0``); the surrogate's
    EXAFS prior re-sums exactly these. Empty ``sig2`` if the header lists no path.
    """
    text = Path(chi_dat).read_text(errors="replace")
    m = _CHI_S02.search(text)
    return {
        "site": int(site),
        "s02": float(m.group(1)) if m else None,
        "sig2": {str(int(g.group(1))): float(g.group(2)) for g in _CHI_PATH.finditer(text)},
    }
