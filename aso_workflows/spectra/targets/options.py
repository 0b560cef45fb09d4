"""``read_options`` of a campaign target: how to read its file (:class:`ReadOptions`, :data:`FORMATS`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from aso_workflows.errors import InputError

_T = TypeVar("_T")

__all__ = ["ReadOptions", "FORMATS"]

FORMATS: tuple[str, ...] = ("auto", "columns", "xmu", "chi", "athena")
"""The file formats ``read_options.format`` names (``"auto"``: recognised by name, header and labels)."""


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
        XANES normalisation ranges (eV relative to E0) and post-edge polynomial degree; default
        xraylarch's ``pre_edge`` (:mod:`~aso_workflows.spectra.xas_processing`).
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

    def recorded(self) -> dict[str, Any]:
        """The options as a target spectrum's ``settings`` record them (JSON types; ``format`` left out,
        the reading records the format it used)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "format"}
        out["columns"] = list(self.columns)
        for key in ("pre_edge", "norm_range"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out


def _pair(field: str, value: Any, kind: Callable[[Any], _T], what: str) -> tuple[_T, _T]:
    try:
        out = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(field, f"expected {what}, got {value!r}") from None
    if len(out) != 2:
        raise InputError(field, f"expected {what}, got {value!r}")
    return out
