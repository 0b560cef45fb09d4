"""``read_target``: a target file → a :class:`~aso_workflows.spectra.spectrum.Spectrum`, the same way for
every technique; what differs by technique is its :class:`~aso_workflows.spectra.targets.base.TargetReader`
(named by its entry in :mod:`aso_workflows.spectra.techniques`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import Grid, Spectrum
from aso_workflows.spectra.targets.base import (
    EXPECTED,
    TargetData,
    TargetFile,
    TargetReader,
    detect_format,
)
from aso_workflows.spectra.targets.hints import header_hints
from aso_workflows.spectra.targets.options import ReadOptions
from aso_workflows.spectra.techniques import get_technique, load_ref
from aso_workflows.spectra.textfile import check_abscissa, read_table
from aso_workflows.spectra.xas_files import is_raw_mu_file, looks_like_mu

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator

__all__ = ["read_target", "target_reader", "target_hints", "settings_with_hints"]


def target_reader(technique: str) -> TargetReader:
    """The target reader of a registered technique.

    Raises
    ------
    InputError
        On field ``technique`` when the technique is not registered.
    """
    cls: type[TargetReader] = load_ref(get_technique(technique).reader)
    return cls()


def target_hints(path: str | Path) -> dict:
    """What a target file's header says: ``radiation``, ``qmax``, ``qdamp``, ``qbroad`` (PDF);
    ``absorber``, ``edge``, ``e0`` (Athena XAS files). Missing keys: not stated.

    Raises
    ------
    InputError
        The file cannot be read as a table (see :func:`read_target`).
    """
    return header_hints(read_table(path, EXPECTED).header)


def settings_with_hints(technique: str, settings: dict, hints: dict) -> dict:
    """``settings`` with the technique's header settings (PDF: ``qmax`` and ``radiation``) taken from the
    file's header hints when the settings do not give them (the settings always win; contradictions are
    refused by :func:`read_target` with ``simulator=``)."""
    out = dict(settings)
    for key in get_technique(technique).header_settings:
        if key not in out and key in hints:
            out[key] = hints[key]
    return out


def read_target(
    path: str | Path,
    technique: str,
    grid: Grid | None = None,
    simulator: Simulator | None = None,
    processing: Any = None,
    **opts: Any,
) -> Spectrum:
    """Read a target spectrum, optionally interpolated onto ``grid`` and checked against ``simulator``.

    Raw μ(E) — an XDI file or Athena project, a text file whose labels or energies say it is μ(E),
    or any file with ``processing`` given — goes to the reader's :meth:`~.base.TargetReader.read_raw_mu`
    (XAS: read and processed by xraylarch, :mod:`aso_workflows.spectra.xas_targets`).

    Parameters
    ----------
    path
        A target file (:mod:`aso_workflows.spectra.targets` lists the formats).
    technique
        A registered technique: ``"pdf"`` (G(r) vs r in Å), ``"exafs"`` (χ(k) vs k in Å⁻¹, returned
        k-weighted), ``"xanes"`` (normalised μ vs energy in eV) ...
    grid
        If given (normally the simulator's grid), the spectrum is linearly interpolated onto it; the
        file must cover the grid's whole range. Defaults to ``simulator.grid()`` when a simulator is
        given.
    simulator
        The technique's simulator: the file is refused when it contradicts its settings (radiation,
        absorber, edge, k-weight), and EXAFS χ is brought to its k-weight.
    processing
        XAS from raw μ(E): the target's ``processing`` section
        (:class:`~aso_workflows.spectra.xas_processing.XASProcessing` or a mapping).
    **opts
        :class:`~aso_workflows.spectra.targets.options.ReadOptions` fields.

    Raises
    ------
    InputError
        One line naming the file (or option) and the problem: missing or unreadable file, fewer than
        two columns, a non-numeric row, NaN/inf, a non-increasing or duplicated abscissa, too few
        points, a range that does not cover ``grid``, or a contradiction with the simulator.
    """
    reader = target_reader(technique)
    if processing is not None or is_raw_mu_file(path):
        return _raw_mu(reader, path, processing, simulator, grid, opts)
    o = ReadOptions.from_options(opts)
    p = Path(path)
    table = read_table(p, EXPECTED)
    f = TargetFile(
        path=p,
        table=table,
        format=o.format if o.format != "auto" else detect_format(p, table),
        options=o,
        hints=header_hints(table.header),
        simulator=simulator,
    )
    if o.format == "auto" and f.format == "columns" and reader.RAW_MU and looks_like_mu(table, technique):
        return _raw_mu(reader, path, processing, simulator, grid, opts)
    if simulator is not None:
        reader.check(simulator, f.hints, f.src)
        if grid is None:
            grid = simulator.grid()
    data = reader.read(f)
    check_abscissa(data.x, data.lines, f.src, o.min_points)
    return _spectrum(technique, reader, reader.finish(data, f), f, grid)


def _spectrum(
    technique: str, reader: TargetReader, data: TargetData, f: TargetFile, grid: Grid | None
) -> Spectrum:
    """The target spectrum of checked ``data``: on ``grid`` when given, with how it was read."""
    entry = get_technique(technique)
    settings: dict = {
        "format": f.format,
        "file": f.src,
        **f.options.recorded(),
        "hints": f.hints,
        **data.settings,
    }
    own = Grid(name=data.grid or entry.grid, unit=entry.unit, values=data.x.tolist())
    if grid is not None:
        reader.check_grid(data, grid, f.src)
        data = _on_grid(data, own, grid, f.src)
    extra = {"dy": np.asarray(data.dy, dtype=float).tolist()} if data.dy is not None else {}
    return Spectrum(
        technique=technique,
        grid=grid if grid is not None else own,
        values=np.asarray(data.y, dtype=float).tolist(),
        settings=settings,
        engine="",
        source=f.src,
        extra=extra,
    )


def _raw_mu(
    reader: TargetReader,
    path: str | Path,
    processing: Any,
    simulator: Simulator | None,
    grid: Grid | None,
    opts: dict,
) -> Spectrum:
    """A target from raw μ(E): ``read_options`` do not apply (``processing`` says how to read it)."""
    if opts:
        raise InputError("read_options", f"{sorted(opts)} do not apply to raw μ(E) files; use processing")
    return reader.read_raw_mu(path, processing, simulator, grid)


def _on_grid(data: TargetData, own: Grid, grid: Grid, src: str) -> TargetData:
    """``data`` linearly interpolated onto ``grid``, which its range must cover (never extrapolated)."""
    x, g = data.x, grid.array
    tol = 1e-6 * max(1.0, float(np.max(np.abs(g))))
    if x[0] > g[0] + tol or x[-1] < g[-1] - tol:
        raise InputError(
            src,
            f"covers {own.name} in [{x[0]:g}, {x[-1]:g}] {own.unit} but the grid needs [{g[0]:g}, {g[-1]:g}] "
            f"{grid.unit}",
        )
    dy = np.interp(g, x, data.dy) if data.dy is not None else None
    return TargetData(x=g, y=np.interp(g, x, data.y), lines=data.lines, dy=dy, settings=data.settings)
