"""Reading target spectra from files: two-column text, FEFF ``xmu.dat`` and ``chi.dat``.

Every problem with a file raises :class:`~aso_workflows.errors.InputError` whose message is one line
naming the file and the problem. Nothing is repaired silently: a file whose abscissa is not strictly
increasing is an error (not sorted), and a file that does not cover the simulator grid is an error
(not extrapolated).

Written by hand rather than with ``numpy.loadtxt``/``pandas.read_csv`` because those report bad rows
as multi-line tracebacks without the line, and accept NaN, duplicated or unsorted abscissae.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import TECHNIQUES, Grid, Spectrum

__all__ = ["read_target", "ReadOptions", "FORMATS"]

FORMATS: tuple[str, ...] = ("auto", "columns", "xmu", "chi")

_SPLIT = re.compile(r"[,\s]+")
# PDFgetX3 ``.gr`` files start with a configuration block ended by this marker line.
_PDFGETX3_MARKER = "#### start data"


@dataclass
class ReadOptions:
    """How to read a target file (the ``read_options`` of a campaign target).

    Parameters
    ----------
    format
        ``"auto"`` (FEFF ``xmu.dat``/``chi.dat`` recognised by name or header, else ``"columns"``),
        ``"columns"`` (any whitespace- or comma-separated text), ``"xmu"`` or ``"chi"``.
    columns
        Zero-based (x, y) columns for ``"columns"`` files; other columns are ignored.
    energy
        For ``xmu.dat`` read as XANES: ``"relative"`` (FEFF's ``e`` column, eV from the edge) or
        ``"absolute"`` (``omega``, eV).
    kweight
        For EXAFS (any format) the file's χ(k) is multiplied by k^kweight; it must be the k-weight of
        the EXAFS simulator the target is compared with. Keep 0 for a file that is already k-weighted.
    min_points
        Fewer data points than this is an error.
    """

    format: str = "auto"
    columns: tuple[int, int] = (0, 1)
    energy: str = "relative"
    kweight: float = 0.0
    min_points: int = 5

    @classmethod
    def from_options(cls, opts: dict) -> ReadOptions:
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise InputError("read_options", f"unknown option(s) {unknown}; expected some of {allowed}")
        o = cls(**opts)
        if o.format not in FORMATS:
            raise InputError(
                "read_options.format", f"unknown format {o.format!r}; expected one of {list(FORMATS)}"
            )
        try:
            cols = tuple(int(c) for c in o.columns)
        except (TypeError, ValueError):
            raise InputError(
                "read_options.columns", f"expected two column numbers, got {o.columns!r}"
            ) from None
        if len(cols) != 2 or min(cols) < 0 or cols[0] == cols[1]:
            raise InputError(
                "read_options.columns", f"expected two different zero-based column numbers, got {o.columns!r}"
            )
        o.columns = cols  # type: ignore[assignment]
        if o.energy not in ("relative", "absolute"):
            raise InputError("read_options.energy", f"expected 'relative' or 'absolute', got {o.energy!r}")
        try:
            o.kweight = float(o.kweight)
            o.min_points = int(o.min_points)
        except (TypeError, ValueError):
            raise InputError("read_options", "kweight must be a number and min_points an integer") from None
        if not math.isfinite(o.kweight) or o.kweight < 0:
            raise InputError("read_options.kweight", f"expected a number ≥ 0, got {o.kweight!r}")
        if o.min_points < 2:
            raise InputError("read_options.min_points", f"expected ≥ 2, got {o.min_points}")
        return o


@dataclass
class _Table:
    """Numeric rows of a text file, with their 1-based line numbers and the last comment line."""

    rows: list[list[float]]
    lines: list[int]
    header: str


def _read_table(path: Path) -> _Table:
    src = str(path)
    if not path.is_file():
        raise InputError(
            src, "file not found (expected a target spectrum: two-column text, xmu.dat or chi.dat)"
        )
    try:
        text = path.read_text(errors="strict")
    except UnicodeDecodeError:
        raise InputError(
            src, "is not a text file (expected whitespace- or comma-separated numbers)"
        ) from None
    except OSError as exc:
        raise InputError(src, f"cannot be read ({exc.strerror or exc})") from None
    all_lines = text.splitlines()
    start = 0
    for i, line in enumerate(all_lines):
        if line.strip().lower().startswith(_PDFGETX3_MARKER):
            start = i + 1
            break
    rows: list[list[float]] = []
    numbers: list[int] = []
    header = ""
    header_row_allowed = True
    for lineno, raw in enumerate(all_lines[start:], start=start + 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            header = line
            continue
        tokens = [t for t in _SPLIT.split(line) if t]
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            # One header line of column names (e.g. "r,G" in a CSV) is allowed before the data.
            if header_row_allowed and not any(_is_number(t) for t in tokens):
                header = line
                header_row_allowed = False
                continue
            shown = line if len(line) <= 40 else line[:37] + "..."
            raise InputError(src, f"line {lineno} is not numeric: {shown!r}") from None
        header_row_allowed = False
        if not all(math.isfinite(v) for v in values):
            raise InputError(src, f"line {lineno} contains NaN or infinite values")
        rows.append(values)
        numbers.append(lineno)
    if not rows:
        raise InputError(src, "contains no data rows (expected whitespace- or comma-separated numbers)")
    return _Table(rows=rows, lines=numbers, header=header)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _columns(table: _Table, cols: tuple[int, ...], src: str) -> np.ndarray:
    """The requested columns as an (n, len(cols)) array; every row must have them."""
    need = max(cols) + 1
    width = min(len(r) for r in table.rows)
    if width < 2:
        i = next(i for i, r in enumerate(table.rows) if len(r) < 2)
        raise InputError(
            src, f"line {table.lines[i]} has {len(table.rows[i])} column; expected at least 2 (x and y)"
        )
    if width < need:
        i = next(i for i, r in enumerate(table.rows) if len(r) < need)
        raise InputError(
            src,
            f"line {table.lines[i]} has {len(table.rows[i])} columns but column {need - 1} (zero-based) is needed",
        )
    return np.array([[r[c] for c in cols] for r in table.rows], dtype=float)


def _detect_format(path: Path, table: _Table) -> str:
    name = path.name.lower()
    labels = set(table.header.lower().replace("@#", " ").replace("#", " ").split())
    if name == "xmu.dat" or {"omega", "mu", "mu0"} <= labels:
        return "xmu"
    if name == "chi.dat" or {"k", "chi", "mag", "phase"} <= labels:
        return "chi"
    return "columns"


def _check_abscissa(x: np.ndarray, lines: list[int], src: str, min_points: int) -> None:
    if len(x) < min_points:
        raise InputError(src, f"has only {len(x)} data point(s); at least {min_points} are needed")
    d = np.diff(x)
    bad = np.flatnonzero(d <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        if d[bad[0]] == 0:
            raise InputError(
                src, f"x = {x[i]:g} at line {lines[i]} repeats the previous point (duplicated grid)"
            )
        raise InputError(
            src,
            f"x is not increasing: {x[i]:g} at line {lines[i]} follows {x[i - 1]:g} "
            "(the file is not sorted; it is not re-ordered automatically)",
        )


_GRID_NAMES = {"pdf": ("r", "Å"), "exafs": ("k", "Å^-1"), "xanes": ("e", "eV")}


def read_target(path: str | Path, technique: str, grid: Grid | None = None, **opts) -> Spectrum:
    """Read a target spectrum, optionally interpolated onto ``grid``.

    Parameters
    ----------
    path
        Two-column text (``.dat``, ``.csv``, ``.gr``, ``.txt``; ``#`` comments; whitespace or comma
        separated; extra columns ignored), FEFF ``xmu.dat`` (omega, e, k, mu, mu0, chi) or FEFF
        ``chi.dat`` (k, chi, mag, phase).
    technique
        ``"pdf"`` (G(r) vs r in Å), ``"exafs"`` (χ(k) vs k in Å⁻¹, returned k-weighted) or ``"xanes"``
        (normalised μ vs energy in eV; FEFF's ``mu`` column is already edge-step normalised).
    grid
        If given (normally the simulator's grid), the spectrum is linearly interpolated onto it; the
        file must cover the grid's whole range.
    **opts
        :class:`ReadOptions` fields: ``format``, ``columns``, ``energy``, ``kweight``, ``min_points``.

    Raises
    ------
    InputError
        One line naming the file (or option) and the problem: missing or unreadable file, fewer than
        two columns, a non-numeric row, NaN/inf, a non-increasing or duplicated abscissa, too few
        points, or a range that does not cover ``grid``.
    """
    if technique not in TECHNIQUES:
        raise InputError("technique", f"unknown technique {technique!r}; expected one of {list(TECHNIQUES)}")
    o = ReadOptions.from_options(opts)
    p = Path(path)
    src = str(p)
    table = _read_table(p)
    fmt = o.format if o.format != "auto" else _detect_format(p, table)

    x_name, x_unit = _GRID_NAMES[technique]
    if fmt == "columns":
        data = _columns(table, o.columns, src)
        x, y, lines = data[:, 0], data[:, 1], table.lines
        if technique == "exafs" and o.kweight:
            y = y * x**o.kweight
    elif fmt == "xmu":
        if technique == "pdf":
            raise InputError(src, "is a FEFF xmu.dat file; a PDF target needs r and G(r) columns")
        data = _columns(table, (0, 1, 2, 3, 4, 5), src)
        lines = table.lines
        if technique == "xanes":
            x = data[:, 1] if o.energy == "relative" else data[:, 0]
            y = data[:, 3]
            if o.energy == "absolute":
                x_name = "E"
        else:  # EXAFS from xmu.dat: χ above the edge, where FEFF's k column is ≥ 0
            keep = data[:, 2] >= 0
            x, y = data[keep, 2], data[keep, 5] * data[keep, 2] ** o.kweight
            lines = [n for n, k in zip(table.lines, keep, strict=True) if k]
    else:  # chi
        if technique != "exafs":
            raise InputError(
                src, f"is a FEFF chi.dat file (k, chi, mag, phase); it cannot be a {technique} target"
            )
        data = _columns(table, (0, 1), src)
        x, y, lines = data[:, 0], data[:, 1] * data[:, 0] ** o.kweight, table.lines

    _check_abscissa(x, lines, src, o.min_points)

    settings = {
        "format": fmt,
        "file": src,
        **{f.name: getattr(o, f.name) for f in fields(o) if f.name != "format"},
    }
    settings["columns"] = list(o.columns)
    spectrum_grid = Grid(name=x_name, unit=x_unit, values=x.tolist())
    if grid is not None:
        g = grid.array
        tol = 1e-6 * max(1.0, float(np.max(np.abs(g))))
        if technique == "xanes" and {grid.name, x_name} == {"e", "E"}:
            raise InputError(
                src,
                f"energies read as {'absolute' if x_name == 'E' else 'relative to the edge'} but the grid "
                f"{grid.name!r} is {'absolute' if grid.name == 'E' else 'relative'}; set read option energy",
            )
        if x[0] > g[0] + tol or x[-1] < g[-1] - tol:
            raise InputError(
                src,
                f"covers {x_name} in [{x[0]:g}, {x[-1]:g}] {x_unit} but the grid needs [{g[0]:g}, {g[-1]:g}] "
                f"{grid.unit}",
            )
        y = np.interp(g, x, y)
        spectrum_grid = grid
    return Spectrum(
        technique=technique,
        grid=spectrum_grid,
        values=np.asarray(y, dtype=float).tolist(),
        settings=settings,
        engine="",
        source=src,
    )
