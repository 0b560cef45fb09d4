"""EXAFS and XANES targets from raw μ(E): read (XDI, Athena project, columns), process with Larch, check.

An EXAFS target is AUTOBK's χ(k), k-weighted as the simulator's spectra, on the simulator's k grid; a
XANES target is the flattened normalised μ(E) on energies relative to E0, on the simulator's grid. The
target keeps what the report and the FEFFIT fit need: ``settings`` holds the file, the
``processing`` settings and the values Larch used (E0, edge step, ranges); ``extra["xas"]`` the arrays
(μ(E), pre-edge line, post-edge curve, AUTOBK background, normalised μ, and χ(k) on Larch's uniform
grid from k = 0).

Checks, one line each naming the file: the element and edge the file states against the simulator's
``absorber``/``edge``; the edge found against the tabulated edge energy of that absorber (xraydb, which
comes with xraylarch), so a file of another element, or one without an edge, is refused; a file too
short for the simulator's grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Grid, Spectrum
from aso_workflows.spectra.xas_files import read_mu
from aso_workflows.spectra.xas_processing import ProcessedMu, XASProcessing, process_mu

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator

__all__ = ["read_mu_target", "processing_settings", "EDGE_TOLERANCE_EV"]

EDGE_TOLERANCE_EV = 60.0
"""Largest distance (eV) between the edge found and the absorber's tabulated edge energy (chemical
shifts are ≲ 20 eV; the nearest other K/L edges are hundreds of eV away)."""


def processing_settings(processing: XASProcessing | dict | None, where: str = "processing") -> XASProcessing:
    """``processing`` validated (a mapping from the campaign file, or ``None`` for Larch's defaults).

    Raises
    ------
    InputError
        One line naming the field (``processing.rbkg: Input should be greater than 0``).
    """
    if isinstance(processing, XASProcessing):
        return processing
    from pydantic import ValidationError

    try:
        return XASProcessing.model_validate(processing or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InputError(
            f"{where}.{loc}" if loc else where, err["msg"].removeprefix("Value error, ")
        ) from None


def _check_element(hints: dict, simulator: Simulator | None, src: str) -> tuple[str | None, str]:
    """The absorber and edge to process for; refuse a file that states another one."""
    absorber = getattr(simulator, "absorber", None)
    edge = str(getattr(simulator, "edge", None) or "K")
    stated, stated_edge = hints.get("element"), hints.get("edge")
    if absorber and stated and stated != absorber:
        raise InputError(
            src,
            f"is {' '.join(filter(None, [stated, stated_edge]))} data (its header says so) but settings.absorber "
            f"is {absorber!r}",
        )
    if absorber and stated_edge and stated_edge != edge:
        raise InputError(
            src, f"is {stated_edge}-edge data (its header says so) but settings.edge is {edge!r}"
        )
    return absorber or stated, edge


def _check_edge_energy(e0: float, element: str | None, edge: str, src: str) -> None:
    if not element:
        return
    try:
        import xraydb
    except ImportError:  # pragma: no cover - installed with xraylarch
        return
    try:
        tabulated = float(xraydb.xray_edge(element, edge).energy)
    except (ValueError, AttributeError, KeyError, TypeError):
        return  # an edge xraydb does not tabulate: nothing to compare with
    if abs(e0 - tabulated) > EDGE_TOLERANCE_EV:
        raise InputError(
            src,
            f"has its edge at {e0:.1f} eV, not at the {element} {edge} edge ({tabulated:.1f} eV): another "
            "element, or no edge in the file (set processing.e0 if the energies are shifted)",
        )


def read_mu_target(
    path: str | Path,
    technique: str,
    processing: XASProcessing | dict | None = None,
    simulator: Simulator | None = None,
    grid: Grid | None = None,
) -> Spectrum:
    """An EXAFS (χ(k)) or XANES (normalised μ) target made from a raw μ(E) file by Larch.

    Parameters
    ----------
    path
        XDI, Athena project or columns file holding μ(E) (or i0 and itrans/ifluor).
    technique
        ``"exafs"`` or ``"xanes"``.
    processing
        The target's ``processing`` section (:class:`XASProcessing`).
    simulator
        The technique's simulator: its absorber/edge are checked, its ``kweight`` weights χ(k), its
        grid (default for ``grid``) is where the target is put.
    grid
        Grid to interpolate onto (must be covered by the data).

    Raises
    ------
    InputError
        One line: the file cannot be read or processed, is for another element or edge, or does not
        cover the grid.
    """
    if technique not in ("exafs", "xanes"):
        raise InputError(path, f"is raw μ(E) (XAS); it cannot be a {technique} target")
    p = processing_settings(processing)
    data = read_mu(path, p)
    src = data.source
    element, edge = _check_element(data.hints, simulator, src)
    proc = process_mu(data.energy, data.mu, p, src, chi=technique == "exafs")
    _check_edge_energy(proc.used["e0"], element, edge, src)
    if grid is None and simulator is not None:
        grid = simulator.grid()
    if technique == "exafs":
        assert proc.k is not None and proc.chi is not None
        kweight = float(getattr(simulator, "kweight", 0.0) or 0.0)
        x, y = proc.k, proc.chi * proc.k**kweight
        name, unit = "k", "Å^-1"
    else:
        kweight = None
        x, y = proc.energy - proc.used["e0"], proc.flat
        name, unit = "e", "eV"
    spectrum_grid = Grid(name=name, unit=unit, values=x.tolist())
    if grid is not None:
        g = grid.array
        if x[0] > g[0] + 1e-6 or x[-1] < g[-1] - 1e-6:
            raise InputError(
                src,
                f"gives {name} in [{x[0]:.4g}, {x[-1]:.4g}] {unit} after processing but the simulator's grid "
                f"needs [{g[0]:g}, {g[-1]:g}] (shorten the simulator's range)",
            )
        y = np.interp(g, x, y)
        spectrum_grid = grid
    return Spectrum(
        technique=technique,
        grid=spectrum_grid,
        values=np.asarray(y, dtype=float).tolist(),
        absorber=element,
        edge=edge,
        settings=_target_settings(data.fmt, src, p, data.mode, data.columns, data.hints, proc, kweight),
        source=src,
        extra={"xas": proc.arrays()},
    )


def _target_settings(
    fmt: str,
    src: str,
    p: XASProcessing,
    mode: str,
    columns: dict,
    hints: dict,
    proc: ProcessedMu,
    kweight: float | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format": fmt,
        "file": src,
        "processing": p.model_dump(mode="json"),
        "mode": mode,
        "columns": columns,
        "hints": hints,
        "processed": dict(proc.used),
        "e0": proc.used["e0"],
    }
    if kweight is not None:
        out["kweight"] = kweight
        out["data_kweight"] = 0.0
    return out
