"""Reading target spectra from files, with the hints their headers carry and checks against the simulator.

Formats (``read_options.format``; ``"auto"`` recognises them by name, header and column labels):

* ``columns``: any whitespace- or comma-separated text, ``#`` comments, an optional row of column
  names; PDFgetX2/PDFgetX3/PDFgetN ``.gr`` files with their settings header (data after the
  ``#### start data`` line). A fourth column of a PDF file is dG(r) (PDFgui's rule: used when every
  value is > 0), kept as ``extra["dy"]`` for ``fit: {weights: dG}``.
* ``xmu``/``chi``: FEFF's ``xmu.dat`` (omega, e, k, mu, mu0, chi) and ``chi.dat`` (k, chi, mag, phase).
* ``athena``: files exported by Athena/Demeter (or Larch): ``.xmu`` (μ(E), normalised here),
  ``.nor`` (normalised μ(E)) and ``.chik`` (k, chi, chik, chik2, chik3 ...).

Header hints (:func:`target_hints`), as PDFgui reads them: the radiation (a ``stype=``/``mode =``
setting when there is one, else ``x-ray``/``PDFgetX`` → X-ray, ``neutron``/``PDFgetN`` → neutron),
``qmax=``, ``qdamp=``, ``qbroad=``; from Athena headers the
element, edge and E0. :func:`settings_with_hints` fills a missing ``qmax``/``radiation`` setting from
them; :func:`read_target` with ``simulator=`` refuses a file that contradicts the settings (radiation,
absorber, edge, k-weight), with one line naming the file.

XANES from raw μ(E) (Athena ``.xmu``, or ``normalize: true``) is normalised as Athena and Larch do
(:func:`~aso_workflows.spectra.xafs.pre_edge`: pre-edge line, post-edge polynomial, edge step at E0,
flattened), on energies relative to E0 (header, ``read_options.e0``, or the maximum of dμ/dE).

Every problem with a file raises :class:`~aso_workflows.errors.InputError` whose message is one line
naming the file and the problem. Nothing is repaired silently: a file whose abscissa is not strictly
increasing is an error (not sorted), and a file that does not cover the simulator grid is an error
(not extrapolated).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from aso_workflows.errors import InputError
from aso_workflows.spectra.spectrum import TECHNIQUES, Grid, Spectrum, is_technique
from aso_workflows.spectra.textfile import Table, check_abscissa, columns, read_table

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator

_T = TypeVar("_T")

__all__ = ["read_target", "ReadOptions", "FORMATS", "target_hints", "settings_with_hints"]

FORMATS: tuple[str, ...] = ("auto", "columns", "xmu", "chi", "athena")

_F = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_ATHENA_SUFFIXES = {".xmu": "xmu", ".nor": "nor", ".chik": "chik"}
_RADIATION_WORDS = {"x": "xray", "xray": "xray", "x-ray": "xray", "n": "neutron", "neutron": "neutron"}
# Athena/Larch chi(k) column labels and the k-weight of the χ they hold.
_CHI_LABELS = {"chi": 0.0, "chik": 1.0, "chik1": 1.0, "chik2": 2.0, "chik3": 3.0}


@dataclass
class ReadOptions:
    """How to read a target file (the ``read_options`` of a campaign target).

    Parameters
    ----------
    format
        ``"auto"`` (recognised by name, header and labels), ``"columns"``, ``"xmu"``, ``"chi"`` or
        ``"athena"``.
    columns
        Zero-based (x, y) columns for ``"columns"`` files (and the y column of an Athena file when
        given); other columns are ignored.
    energy
        XANES energies ``"relative"`` to E0 (the grid ``e``) or ``"absolute"`` (``E``).
    kweight
        EXAFS: multiply the file's χ by k^kweight. ``None`` (default): bring it to the simulator's
        k-weight from the file's own (needs ``simulator=`` and a known ``data_kweight``); without a
        simulator, ``None`` leaves the values as they are.
    data_kweight
        EXAFS: the k-weight of the χ stored in the file. Known for FEFF (0) and Athena (from the
        column label) files; for plain columns state it (0 for χ(k), 2 for k²·χ(k)).
    dy_column
        PDF: zero-based column of the uncertainties dG, ``"auto"`` (the fourth column when every
        value is > 0, as PDFgui reads it) or ``"none"``.
    e0
        XANES: edge energy (eV, absolute) of a measured μ(E); default: the file's header, else the
        maximum of dμ/dE.
    normalize
        XANES: normalise the file's μ(E) (pre-/post-edge, Athena/Larch convention). Default: yes for
        Athena ``.xmu`` (raw μ), no otherwise (the values are taken as normalised).
    pre_edge, norm_range, nnorm
        XANES normalisation ranges (eV relative to E0) and post-edge polynomial degree; default as in
        :func:`~aso_workflows.spectra.xafs.pre_edge`.
    min_points
        Fewer data points than this is an error.
    """

    format: str = "auto"
    columns: tuple[int, int] = (0, 1)
    energy: str = "relative"
    kweight: float | None = None
    data_kweight: float | None = None
    dy_column: int | str = "auto"
    e0: float | None = None
    normalize: bool | None = None
    pre_edge: tuple[float, float] | None = None
    norm_range: tuple[float, float] | None = None
    nnorm: int | None = None
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
        o.columns = _pair("read_options.columns", o.columns, int, "two column numbers")
        if min(o.columns) < 0 or o.columns[0] == o.columns[1]:
            raise InputError(
                "read_options.columns",
                f"expected two different zero-based column numbers, got {opts.get('columns')!r}",
            )
        if o.energy not in ("relative", "absolute"):
            raise InputError("read_options.energy", f"expected 'relative' or 'absolute', got {o.energy!r}")
        for name in ("kweight", "data_kweight", "e0"):
            value = getattr(o, name)
            if value is None:
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(f"read_options.{name}", f"expected a number, got {value!r}") from None
            if not math.isfinite(value) or (name != "e0" and value < 0):
                raise InputError(f"read_options.{name}", f"expected a number ≥ 0, got {getattr(o, name)!r}")
            setattr(o, name, value)
        if isinstance(o.dy_column, str):
            if o.dy_column not in ("auto", "none"):
                raise InputError(
                    "read_options.dy_column",
                    f"expected a column number, 'auto' or 'none', got {o.dy_column!r}",
                )
        elif isinstance(o.dy_column, bool) or not isinstance(o.dy_column, int) or o.dy_column < 0:
            raise InputError(
                "read_options.dy_column", f"expected a column number, 'auto' or 'none', got {o.dy_column!r}"
            )
        for name in ("pre_edge", "norm_range"):
            if getattr(o, name) is not None:
                setattr(
                    o,
                    name,
                    _pair(f"read_options.{name}", getattr(o, name), float, "[low, high] in eV from E0"),
                )
        try:
            o.min_points = int(o.min_points)
            o.nnorm = None if o.nnorm is None else int(o.nnorm)
        except (TypeError, ValueError):
            raise InputError("read_options", "min_points and nnorm must be integers") from None
        if o.min_points < 2:
            raise InputError("read_options.min_points", f"expected ≥ 2, got {o.min_points}")
        if o.normalize is not None and not isinstance(o.normalize, bool):
            raise InputError("read_options.normalize", f"expected true or false, got {o.normalize!r}")
        return o


def _pair(field: str, value: Any, kind: Callable[[Any], _T], what: str) -> tuple[_T, _T]:
    try:
        out = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(field, f"expected {what}, got {value!r}") from None
    if len(out) != 2:
        raise InputError(field, f"expected {what}, got {value!r}")
    return out


# ---- header hints ----------------------------------------------------------------------------------
def _header_hints(header: str) -> dict:
    """PDF and XAS hints of a header (PDFgui's rules for the PDF ones)."""
    hints: dict = {}
    stated = re.search(r"\b(?:stype|mode|radiation)\s*[=:]\s*([A-Za-z-]+)", header, re.I)
    value = _RADIATION_WORDS.get(stated.group(1).lower()) if stated else None
    if value is not None:  # "stype=N", "mode = neutron" (PDFgui, PDFgetX3/N3 configuration)
        hints["radiation"] = value
    elif re.search(r"(x-?ray|PDFgetX)", header, re.I):  # else PDFgui's rule
        hints["radiation"] = "xray"
    elif re.search(r"(neutron|PDFgetN)", header, re.I):
        hints["radiation"] = "neutron"
    for key, names in (("qmax", "qmax"), ("qdamp", "qdamp|qsig"), ("qbroad", "qbroad|qalp")):
        m = re.search(rf"\b(?:{names}) *= *({_F})(?![\w.])", header, re.I)
        if m:
            hints[key] = float(m.group(1))
    m = re.search(r"Element(?:\.symbol)?\s*[=:]\s*([A-Z][a-z]?)\b", header)
    if m:
        hints["absorber"] = m.group(1)
    m = re.search(r"(?:Element\.edge\s*:|\bEdge\s*=)\s*([KLM][1-5]?)\b", header)
    if m:
        hints["edge"] = m.group(1).upper()
    m = re.search(rf"\bE0\s*[=:]\s*({_F})", header)
    if m:
        hints["e0"] = float(m.group(1))
    return hints


def _detect_format(path: Path, table: Table) -> str:
    name = path.name.lower()
    labels = set(table.labels) - {"@#"}
    if name == "xmu.dat" or {"omega", "mu", "mu0"} <= labels:
        return "xmu"
    if name == "chi.dat" or {"k", "chi", "mag", "phase"} <= labels:
        return "chi"
    if path.suffix.lower() in _ATHENA_SUFFIXES or re.search(r"athena|demeter", table.header, re.I):
        return "athena"
    return "columns"


def _athena_kind(path: Path, table: Table) -> str:
    """``"xmu"`` (μ(E)), ``"nor"`` (normalised μ(E)) or ``"chik"`` (χ(k)) of an Athena file."""
    m = re.search(r"(?:output_filetype\s*:|\bSaving .* as)\s*(.*)$", table.header, re.I | re.M)
    what = m.group(1).lower() if m else ""
    if "chi(k)" in what:
        return "chik"
    if "norm" in what:
        return "nor"
    if "mu(e)" in what:
        return "xmu"
    if path.suffix.lower() in _ATHENA_SUFFIXES:
        return _ATHENA_SUFFIXES[path.suffix.lower()]
    labels = table.labels
    if labels and labels[0] == "k":
        return "chik"
    return "nor" if {"norm", "flat"} & set(labels) else "xmu"


def target_hints(path: str | Path) -> dict:
    """What a target file's header says: ``radiation``, ``qmax``, ``qdamp``, ``qbroad`` (PDF);
    ``absorber``, ``edge``, ``e0`` (Athena XAS files). Missing keys: not stated.

    Raises
    ------
    InputError
        The file cannot be read as a table (see :func:`read_target`).
    """
    return _header_hints(read_table(path, _EXPECTED).header)


def settings_with_hints(technique: str, settings: dict, hints: dict) -> dict:
    """``settings`` with ``qmax`` and ``radiation`` of a PDF target taken from the file's header
    hints when the settings do not give them (the settings always win; contradictions are refused by
    :func:`read_target` with ``simulator=``)."""
    out = dict(settings)
    if technique == "pdf":
        for key in ("qmax", "radiation"):
            if key not in out and key in hints:
                out[key] = hints[key]
    return out


# ---- reading -----------------------------------------------------------------------------------------
_GRID_NAMES = {"pdf": ("r", "Å"), "exafs": ("k", "Å^-1"), "xanes": ("e", "eV")}
_EXPECTED = "a target spectrum: two-column text, a PDFgetX/N .gr, xmu.dat, chi.dat or an Athena file"


@dataclass
class _Read:
    x: np.ndarray
    y: np.ndarray
    lines: list[int]
    dy: np.ndarray | None = None
    data_kweight: float | None = None  # EXAFS: k-weight of y as read (before read_options.kweight)
    e0: float | None = None  # XANES: E0 (absolute eV) used to make energies relative
    normalised: dict | None = None  # XANES: how it was normalised


def _pdf_dy(table: Table, o: ReadOptions, src: str) -> np.ndarray | None:
    if o.dy_column == "none":
        return None
    if o.dy_column == "auto":
        if table.width < 4 or o.columns != (0, 1):
            return None
        dy = table.column(3)
        return dy if np.all(dy > 0) else None
    dy = columns(table, (int(o.dy_column),), src)[:, 0]
    if np.any(dy <= 0):
        i = int(np.flatnonzero(dy <= 0)[0])
        raise InputError(src, f"dG at line {table.lines[i]} is {dy[i]:g}; uncertainties must be > 0")
    return dy


def _xanes_from(
    x: np.ndarray, mu: np.ndarray, lines: list[int], o: ReadOptions, hints: dict, normalize: bool, src: str
) -> _Read:
    """μ(E) on absolute energies → (optionally normalised) μ on relative or absolute energies."""
    from aso_workflows.spectra.xafs import find_e0, pre_edge

    e0 = o.e0 if o.e0 is not None else hints.get("e0")
    info = None
    if normalize:
        kw: dict[str, float] = {}
        if o.pre_edge is not None:
            kw.update(pre1=o.pre_edge[0], pre2=o.pre_edge[1])
        if o.norm_range is not None:
            kw.update(norm1=o.norm_range[0], norm2=o.norm_range[1])
        try:
            pe = pre_edge(x, mu, e0=e0, nnorm=o.nnorm, **kw)
        except ValueError as exc:
            raise InputError(src, f"cannot normalise μ(E): {exc}") from None
        mu, e0 = pe.flat, pe.e0
        info = {
            "convention": "athena/larch pre_edge, flattened",
            "e0": pe.e0,
            "edge_step": pe.edge_step,
            "pre_edge": [pe.pre1, pe.pre2],
            "norm_range": [pe.norm1, pe.norm2],
            "nnorm": pe.nnorm,
        }
    elif e0 is None and o.energy == "relative":
        try:
            e0 = find_e0(x, mu)
        except ValueError as exc:
            raise InputError(src, f"cannot find E0: {exc}") from None
    if o.energy == "relative":
        x = x - e0
    return _Read(x=x, y=mu, lines=lines, e0=e0, normalised=info)


def _read_athena(table: Table, path: Path, technique: str, o: ReadOptions, hints: dict, src: str) -> _Read:
    kind = _athena_kind(path, table)
    labels = table.labels
    ycol = o.columns[1] if o.columns != (0, 1) else None
    if kind == "chik":
        if technique != "exafs":
            raise InputError(src, f"is an Athena χ(k) file; it cannot be a {technique} target")
        if ycol is None:
            ycol = labels.index("chi") if "chi" in labels else 1
        data = columns(table, (0, ycol), src)
        label = labels[ycol] if ycol < len(labels) else ""
        weight = _CHI_LABELS.get(label)
        if weight is None and o.data_kweight is None:
            raise InputError(
                src,
                f"column {ycol} ({label or 'unlabelled'}) does not say its k-weight; set read_options.data_kweight",
            )
        if weight is not None and o.data_kweight is not None and weight != o.data_kweight:
            raise InputError(
                src,
                f"column {ycol} is {label!r} (k-weight {weight:g}) but read_options.data_kweight is {o.data_kweight:g}",
            )
        return _Read(
            x=data[:, 0],
            y=data[:, 1],
            lines=table.lines,
            data_kweight=weight if weight is not None else o.data_kweight,
        )
    if technique != "xanes":
        raise InputError(
            src,
            f"is an Athena μ(E) file ({'normalised' if kind == 'nor' else 'raw'}); a {technique} target needs {'χ(k) (.chik)' if technique == 'exafs' else 'G(r)'}",
        )
    if ycol is None:
        for name in ("flat", "norm") if kind == "nor" else ("mu", "xmu"):
            if name in labels:
                ycol = labels.index(name)
                break
        else:
            ycol = 1
    data = columns(table, (0, ycol), src)
    normalize = o.normalize if o.normalize is not None else kind == "xmu"
    check_abscissa(data[:, 0], table.lines, src, o.min_points)
    return _xanes_from(data[:, 0], data[:, 1], table.lines, o, hints, normalize, src)


def _check_against(simulator: Simulator, technique: str, hints: dict, src: str) -> None:
    """Refuse a file whose header contradicts the simulator's settings (one line)."""
    radiation = getattr(simulator, "radiation", None)
    if technique == "pdf" and radiation and hints.get("radiation") and hints["radiation"] != radiation:
        raise InputError(
            src,
            f"is {hints['radiation']} PDF data (its header says so) but the target's settings.radiation is "
            f"{radiation!r}; set radiation: {hints['radiation']}",
        )
    for key in ("absorber", "edge"):
        mine = getattr(simulator, key, None)
        if technique in ("exafs", "xanes") and mine and hints.get(key) and hints[key] != mine:
            raise InputError(
                src, f"is {key} {hints[key]} data (its header says so) but settings.{key} is {mine!r}"
            )


def read_target(
    path: str | Path,
    technique: str,
    grid: Grid | None = None,
    simulator: Simulator | None = None,
    processing: Any = None,
    **opts: Any,
) -> Spectrum:
    """Read a target spectrum, optionally interpolated onto ``grid`` and checked against ``simulator``.

    Raw μ(E) (an XDI or Athena project file, or any file with ``processing`` given) is read and
    processed by :func:`~aso_workflows.spectra.xas_targets.read_mu_target` (xraylarch).

    Parameters
    ----------
    path
        A target file (module docstring lists the formats).
    technique
        ``"pdf"`` (G(r) vs r in Å), ``"exafs"`` (χ(k) vs k in Å⁻¹, returned k-weighted) or ``"xanes"``
        (normalised μ vs energy in eV).
    grid
        If given (normally the simulator's grid), the spectrum is linearly interpolated onto it; the
        file must cover the grid's whole range. Defaults to ``simulator.grid()`` when a simulator is
        given.
    simulator
        The technique's simulator: the file is refused when it contradicts its settings (radiation,
        absorber, edge, k-weight), and EXAFS χ is brought to its k-weight.
    processing
        EXAFS/XANES from raw μ(E): the target's ``processing`` section
        (:class:`~aso_workflows.spectra.xas_processing.XASProcessing` or a mapping).
    **opts
        :class:`ReadOptions` fields.

    Raises
    ------
    InputError
        One line naming the file (or option) and the problem: missing or unreadable file, fewer than
        two columns, a non-numeric row, NaN/inf, a non-increasing or duplicated abscissa, too few
        points, a range that does not cover ``grid``, or a contradiction with the simulator.
    """
    if not is_technique(technique):
        raise InputError("technique", f"unknown technique {technique!r}; expected one of {list(TECHNIQUES)}")
    from aso_workflows.spectra.xas_files import is_raw_mu_file, looks_like_mu

    if processing is not None or is_raw_mu_file(path):
        return _raw_mu(path, technique, processing, simulator, grid, opts)
    o = ReadOptions.from_options(opts)
    p = Path(path)
    src = str(p)
    table = read_table(p, _EXPECTED)
    fmt = o.format if o.format != "auto" else _detect_format(p, table)
    if fmt == "columns" and o.format == "auto" and looks_like_mu(table, technique):
        return _raw_mu(path, technique, processing, simulator, grid, opts)
    hints = _header_hints(table.header)
    if simulator is not None:
        _check_against(simulator, technique, hints, src)
        if grid is None:
            grid = simulator.grid()

    x_name, x_unit = _GRID_NAMES[technique]
    if fmt == "columns":
        data = columns(table, o.columns, src)
        r = _Read(x=data[:, 0], y=data[:, 1], lines=table.lines)
        if technique == "pdf":
            r.dy = _pdf_dy(table, o, src)
        elif technique == "exafs":
            r.data_kweight = o.data_kweight
        elif o.normalize:
            check_abscissa(r.x, r.lines, src, o.min_points)
            r = _xanes_from(r.x, r.y, r.lines, o, hints, True, src)
    elif fmt == "xmu":
        if technique == "pdf":
            raise InputError(src, "is a FEFF xmu.dat file; a PDF target needs r and G(r) columns")
        data = columns(table, (0, 1, 2, 3, 4, 5), src)
        if technique == "xanes":
            x = data[:, 1] if o.energy == "relative" else data[:, 0]
            r = _Read(x=x, y=data[:, 3], lines=table.lines)
        else:  # EXAFS from xmu.dat: χ above the edge, where FEFF's k column is ≥ 0
            keep = data[:, 2] >= 0
            lines = [n for n, k in zip(table.lines, keep, strict=True) if k]
            r = _Read(x=data[keep, 2], y=data[keep, 5], lines=lines, data_kweight=0.0)
    elif fmt == "chi":
        if technique != "exafs":
            raise InputError(
                src, f"is a FEFF chi.dat file (k, chi, mag, phase); it cannot be a {technique} target"
            )
        data = columns(table, (0, 1), src)
        r = _Read(x=data[:, 0], y=data[:, 1], lines=table.lines, data_kweight=0.0)
    else:  # athena
        if technique == "pdf":
            raise InputError(src, "is an Athena/Demeter XAS file; a PDF target needs r and G(r) columns")
        r = _read_athena(table, p, technique, o, hints, src)
    if technique == "xanes" and o.energy == "absolute":
        x_name = "E"

    check_abscissa(r.x, r.lines, src, o.min_points)
    settings: dict = {
        "format": fmt,
        "file": src,
        **{f.name: getattr(o, f.name) for f in fields(o) if f.name != "format"},
        "columns": list(o.columns),
        "hints": hints,
    }
    for key in ("pre_edge", "norm_range"):
        if settings[key] is not None:
            settings[key] = list(settings[key])
    y = r.y
    if technique == "exafs":
        y, settings["kweight"] = _kweighted(r, o, simulator, src)
    if r.normalised is not None:
        settings["normalisation"] = r.normalised
    if r.e0 is not None:
        settings["e0"] = r.e0
    dy = r.dy
    spectrum_grid = Grid(name=x_name, unit=x_unit, values=r.x.tolist())
    x = r.x
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
        if dy is not None:
            dy = np.interp(g, x, dy)
        spectrum_grid = grid
    extra = {"dy": np.asarray(dy, dtype=float).tolist()} if dy is not None else {}
    return Spectrum(
        technique=technique,
        grid=spectrum_grid,
        values=np.asarray(y, dtype=float).tolist(),
        settings=settings,
        engine="",
        source=src,
        extra=extra,
    )


def _raw_mu(
    path: str | Path,
    technique: str,
    processing: Any,
    simulator: Simulator | None,
    grid: Grid | None,
    opts: dict,
) -> Spectrum:
    """A target from raw μ(E), processed by Larch (:mod:`~aso_workflows.spectra.xas_targets`)."""
    if opts:
        raise InputError("read_options", f"{sorted(opts)} do not apply to raw μ(E) files; use processing")
    from aso_workflows.spectra.xas_targets import read_mu_target

    return read_mu_target(path, technique, processing, simulator=simulator, grid=grid)


def _kweighted(
    r: _Read, o: ReadOptions, simulator: Simulator | None, src: str
) -> tuple[np.ndarray, float | None]:
    """EXAFS values k-weighted as asked, and their k-weight (``None`` when unknown)."""
    base = r.data_kweight
    sim_w = getattr(simulator, "kweight", None) if simulator is not None else None
    if o.kweight is not None:
        applied = o.kweight
        base = 0.0 if base is None else base  # a plain file multiplied by k^kweight holds χ(k)
    elif sim_w is not None:
        if base is None:
            raise InputError(
                src,
                "does not say the k-weight of its χ; set read_options.data_kweight (0 for χ(k), 2 for k²·χ(k)) "
                "or read_options.kweight",
            )
        applied = float(sim_w) - base
    else:
        applied = 0.0
    weight = None if base is None else base + applied
    if sim_w is not None and weight is not None and abs(weight - float(sim_w)) > 1e-9:
        raise InputError(
            src,
            f"holds k^{base:g}·χ(k); read_options.kweight {applied:g} makes it k^{weight:g}·χ(k) but the EXAFS "
            f"simulator's kweight is {float(sim_w):g}",
        )
    y = r.y * r.x**applied if applied else r.y
    return y, weight
