"""Raw μ(E) from a file: XDI (``.xdi``), Athena projects (``.prj``) and plain columns.

XDI and Athena projects are read with xraylarch's own readers (``larch.io.read_xdi``,
``read_athena``); plain text with :func:`~aso_workflows.spectra.textfile.read_table` (line numbers in
every error). μ(E) is then taken from the columns :class:`~aso_workflows.spectra.xas_processing.MuColumns`
names — a μ column, or transmission ln(i0/itrans), or fluorescence ifluor/i0 — by label or number.
Every problem is one :class:`~aso_workflows.errors.InputError` line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aso_workflows.errors import InputError
from aso_workflows.spectra.textfile import Table
from aso_workflows.spectra.xas_processing import MuColumns, XASProcessing

__all__ = ["MuData", "read_mu", "is_raw_mu_file", "looks_like_mu", "RAW_MU_SUFFIXES"]

RAW_MU_SUFFIXES: dict[str, str] = {".xdi": "xdi", ".prj": "athena-project"}
"""File endings read as raw μ(E) without being asked."""

_MU_LABELS = ("mutrans", "mufluor", "mu", "xmu", "mu_trans", "mu_fluor")
_ITRANS_LABELS = ("itrans", "it", "i1")
_IFLUOR_LABELS = ("ifluor", "if", "iff")
_ENERGY_LABELS = ("energy", "e", "ene")


@dataclass
class MuData:
    """μ(E) as read: energies (eV), μ, and what the file says about itself.

    Attributes
    ----------
    source
        The file (and ``#group`` for an Athena project).
    fmt
        ``"xdi"``, ``"athena-project"`` or ``"columns"``.
    mode
        ``"mu"`` (a μ column), ``"transmission"`` or ``"fluorescence"``.
    columns
        The labels (or numbers) actually used, ``{"energy": ..., "mu": ...}`` or with ``i0``/``itrans``/``ifluor``.
    hints
        ``element``, ``edge``, ``e0`` when the file states them.
    """

    energy: np.ndarray
    mu: np.ndarray
    source: str
    fmt: str
    mode: str
    columns: dict[str, Any]
    hints: dict[str, Any] = field(default_factory=dict)


def is_raw_mu_file(path: str | Path) -> bool:
    """Whether the file is raw μ(E) by its name alone (``.xdi``, ``.prj``)."""
    return Path(path).suffix.lower() in RAW_MU_SUFFIXES


def looks_like_mu(table: Table, technique: str) -> bool:
    """Whether a plain text table (no other format recognised) is raw μ(E).

    Its column labels name μ(E) (``mutrans``, ``mufluor``, or ``i0`` with ``itrans``/``ifluor``); or,
    for an EXAFS target, its first column starts above 100 (energies in eV: χ(k) never reaches
    k = 100 Å⁻¹).
    """
    if technique not in ("exafs", "xanes"):
        return False
    labels = set(table.labels)
    if labels & {"mutrans", "mufluor", "mu_trans", "mu_fluor"}:
        return True
    if "i0" in labels and labels & set(_ITRANS_LABELS + _IFLUOR_LABELS):
        return True
    return technique == "exafs" and bool(table.rows) and table.rows[0][0] > 100.0


def read_mu(path: str | Path, p: XASProcessing) -> MuData:
    """Read raw μ(E) from ``path`` with the columns and group of ``p``.

    Raises
    ------
    InputError
        Missing or unreadable file, columns that do not exist or do not make μ(E), non-finite values,
        energies not strictly increasing, or an Athena project with several groups and none chosen.
    """
    src = str(path)
    if not Path(path).is_file():
        raise InputError(src, "file not found (expected raw μ(E): XDI, an Athena project or columns)")
    suffix = Path(path).suffix.lower()
    if suffix == ".xdi":
        data = _read_xdi(Path(path), p)
    elif suffix == ".prj":
        data = _read_project(Path(path), p)
    else:
        data = _read_columns(Path(path), p)
    if p.energy_unit == "keV":
        data.energy = data.energy * 1000.0
    _check(data)
    return data


# ---- formats ---------------------------------------------------------------------------------------
def _read_xdi(path: Path, p: XASProcessing) -> MuData:
    from aso_workflows.spectra.xraylarch import larch_modules, quiet

    _, lio = larch_modules(str(path))
    try:
        with quiet():
            g = lio.read_xdi(str(path))
    except (ValueError, OSError, UnicodeDecodeError, IndexError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(path, f"is not a readable XDI file ({reason})") from None
    labels = [str(lab).lower() for lab in g.array_labels]
    arrays = {
        lab: np.asarray(getattr(g, orig), dtype=float)
        for lab, orig in zip(labels, g.array_labels, strict=True)
    }
    units = [str(u).lower() for u in getattr(g, "array_units", [])]
    hints = _xdi_hints(g)
    data = _mu_from(arrays, labels, p.columns, str(path), "xdi", hints)
    e_col = labels.index(data.columns["energy"]) if data.columns["energy"] in labels else 0
    if e_col < len(units) and units[e_col] == "kev" and p.energy_unit == "eV":
        data.energy = data.energy * 1000.0  # the file says keV
    return data


def _xdi_hints(g: Any) -> dict[str, Any]:
    attrs = getattr(g, "attrs", {}) or {}
    hints: dict[str, Any] = {}
    element = (attrs.get("element", {}) or {}).get("symbol") or (attrs.get("scan", {}) or {}).get("element")
    edge = (attrs.get("element", {}) or {}).get("edge") or (attrs.get("scan", {}) or {}).get("edge")
    if element:
        hints["element"] = str(element).strip().capitalize()
    if edge:
        hints["edge"] = str(edge).strip().upper()
    e0 = (attrs.get("scan", {}) or {}).get("edge_energy")
    try:
        if e0 is not None:
            hints["e0"] = float(str(e0).split()[0])
    except ValueError:
        pass
    return hints


def _read_project(path: Path, p: XASProcessing) -> MuData:
    from aso_workflows.spectra.xraylarch import larch_modules, quiet

    _, lio = larch_modules(str(path))
    try:
        with quiet():
            proj = lio.read_athena(str(path), do_preedge=False, do_bkg=False, do_fft=False)
    except Exception as exc:  # noqa: BLE001 - Larch raises anything on a broken project: one line
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputError(path, f"is not a readable Athena project ({reason})") from None
    groups: dict[str, Any] = dict(getattr(proj, "groups", {}) or {}) if proj is not None else {}
    if not groups:
        raise InputError(path, "is an Athena project with no data groups")
    names = list(groups)
    labels = [str(getattr(groups[n], "label", n)) for n in names]
    choice = p.group
    if choice is None:
        if len(names) > 1:
            raise InputError(
                path,
                f"holds {len(names)} groups {labels}; choose one with processing.group (label or number)",
            )
        key = names[0]
    elif isinstance(choice, int):
        if choice >= len(names):
            raise InputError(
                path, f"has {len(names)} groups {labels}; processing.group {choice} does not exist"
            )
        key = names[choice]
    else:
        hit = [n for n, lab in zip(names, labels, strict=True) if choice in (n, lab)]
        if not hit:
            raise InputError(path, f"has no group {choice!r}; its groups are {labels}")
        key = hit[0]
    g = groups[key]
    if not hasattr(g, "energy") or not hasattr(g, "mu"):
        raise InputError(path, f"group {key!r} holds no μ(E) (a χ(k) or merged record?)")
    arrays = {"energy": np.asarray(g.energy, dtype=float), "mu": np.asarray(g.mu, dtype=float)}
    for extra in ("i0",):
        v = getattr(g, extra, None)
        if v is not None and np.ndim(v) == 1 and len(v) == len(arrays["energy"]):
            arrays[extra] = np.asarray(v, dtype=float)
    hints: dict[str, Any] = {}
    if getattr(g, "atsym", None):
        hints["element"] = str(g.atsym).strip().capitalize()
    if getattr(g, "edge", None):
        hints["edge"] = str(g.edge).strip().upper()
    cols = p.columns if p.columns != MuColumns() else MuColumns(energy="energy", mu="mu")
    return _mu_from(arrays, list(arrays), cols, f"{path}#{key}", "athena-project", hints)


def _read_columns(path: Path, p: XASProcessing) -> MuData:
    from aso_workflows.spectra.targets.hints import header_hints
    from aso_workflows.spectra.textfile import read_table

    table = read_table(path, "raw μ(E): energy and μ (or i0 and itrans/ifluor) columns")
    width = table.width
    labels = table.labels if len(table.labels) >= width else [f"col{i}" for i in range(width)]
    arrays = {lab: table.column(i) for i, lab in enumerate(labels[:width])}
    hints = {}
    raw = header_hints(table.header)
    if "absorber" in raw:
        hints["element"] = raw["absorber"]
    if "edge" in raw:
        hints["edge"] = raw["edge"]
    return _mu_from(arrays, labels[:width], p.columns, str(path), "columns", hints)


# ---- μ from columns --------------------------------------------------------------------------------
def _pick(
    spec: str | int | None, labels: list[str], defaults: tuple[str, ...], what: str, src: str
) -> str | None:
    """The label of the column ``spec`` names (label or number), or the first default label present."""
    if spec is None:
        return next((d for d in defaults if d in labels), None)
    if isinstance(spec, int):
        if spec >= len(labels):
            raise InputError(
                src, f"has {len(labels)} columns; processing.columns.{what} = {spec} does not exist"
            )
        return labels[spec]
    name = str(spec).strip().lower()
    if name not in labels:
        raise InputError(src, f"has no column {spec!r} (processing.columns.{what}); its columns are {labels}")
    return name


def _mu_from(
    arrays: dict[str, np.ndarray], labels: list[str], cols: MuColumns, src: str, fmt: str, hints: dict
) -> MuData:
    energy = _pick(cols.energy, labels, _ENERGY_LABELS, "energy", src) or labels[0]
    if cols.itrans is not None or cols.ifluor is not None:
        mode = "transmission" if cols.itrans is not None else "fluorescence"
    elif cols.mu is not None:
        mode = "mu"
    elif _pick(None, labels, _MU_LABELS, "mu", src):
        mode = "mu"
    elif "i0" in labels and _pick(None, labels, _ITRANS_LABELS, "itrans", src):
        mode = "transmission"
    elif "i0" in labels and _pick(None, labels, _IFLUOR_LABELS, "ifluor", src):
        mode = "fluorescence"
    else:
        raise InputError(
            src,
            f"has no μ(E) column among {labels}; set processing.columns.mu, or i0 with itrans "
            "(transmission) or ifluor (fluorescence)",
        )
    e = arrays[energy]
    if mode == "mu":
        name = _pick(cols.mu, labels, _MU_LABELS, "mu", src)
        assert name is not None
        return MuData(e, arrays[name], src, fmt, mode, {"energy": energy, "mu": name}, hints)
    i0 = _pick(cols.i0, labels, ("i0",), "i0", src)
    if i0 is None:
        raise InputError(src, f"has no i0 column among {labels}; set processing.columns.i0")
    if mode == "transmission":
        it = _pick(cols.itrans, labels, _ITRANS_LABELS, "itrans", src)
        assert it is not None
        a, b = arrays[i0], arrays[it]
        if np.any(a <= 0) or np.any(b <= 0):
            raise InputError(src, f"transmission needs i0 and {it} > 0 everywhere (μ = ln(i0/{it}))")
        return MuData(e, np.log(a / b), src, fmt, mode, {"energy": energy, "i0": i0, "itrans": it}, hints)
    fl = _pick(cols.ifluor, labels, _IFLUOR_LABELS, "ifluor", src)
    assert fl is not None
    if np.any(arrays[i0] == 0):
        raise InputError(src, f"fluorescence needs i0 ≠ 0 everywhere (μ = {fl}/i0)")
    return MuData(
        e, arrays[fl] / arrays[i0], src, fmt, mode, {"energy": energy, "i0": i0, "ifluor": fl}, hints
    )


def _check(d: MuData) -> None:
    if len(d.energy) < 20:
        raise InputError(d.source, f"has only {len(d.energy)} energy points; raw μ(E) needs at least 20")
    if not (np.all(np.isfinite(d.energy)) and np.all(np.isfinite(d.mu))):
        i = int(np.flatnonzero(~(np.isfinite(d.energy) & np.isfinite(d.mu)))[0])
        raise InputError(d.source, f"point {i + 1} has a NaN or infinite energy or μ")
    step = np.diff(d.energy)
    bad = np.flatnonzero(step <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        what = (
            "repeats the previous energy"
            if step[bad[0]] == 0
            else f"is below the previous {d.energy[i - 1]:g} eV"
        )
        raise InputError(
            d.source,
            f"energy {d.energy[i]:g} eV at point {i + 1} {what} (energies must increase; not re-ordered)",
        )
    if d.energy[-1] < 1000.0:
        raise InputError(
            d.source,
            f"energies end at {d.energy[-1]:g}: not eV? (set processing.energy_unit: keV, or pick the energy column)",
        )
