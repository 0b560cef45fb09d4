"""Numeric text tables with a header: what every target file is, whatever program wrote it.

Where the data start follows PDFgui's rule: after a ``#... start data`` line when there is one
(PDFgetX2/PDFgetX3/PDFgetN write it after their settings), else at the first line whose first token
is a number. Everything before is the header (kept as text, for hints such as ``qmax=``); ``#``
lines inside the data are comments. Every problem is one :class:`~aso_workflows.errors.InputError`
line naming the file.

Written by hand rather than with ``numpy.loadtxt``/``pandas.read_csv`` because those report bad rows
as multi-line tracebacks without the line, and accept NaN, duplicated or unsorted abscissae.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aso_workflows.errors import InputError

__all__ = ["Table", "read_table", "columns", "check_abscissa"]

_SPLIT = re.compile(r"[,\s]+")
_START_DATA = re.compile(r"^#+\s*start data", re.IGNORECASE)
_FLOAT = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?(\s|,|$)")


@dataclass
class Table:
    """Numeric rows of a text file, their 1-based line numbers, the header and the column labels.

    Attributes
    ----------
    rows, lines
        The numbers of each data row and its line number in the file.
    header
        The text before the data (comment marks kept).
    labels
        Column names from the last header line (``#L r G(r) dr dG``, ``#  k chi chik``, ``r,G``),
        lower-case, ``[]`` when that line is not a list of names.
    """

    rows: list[list[float]]
    lines: list[int]
    header: str
    labels: list[str]

    def column(self, i: int) -> np.ndarray:
        return np.array([r[i] for r in self.rows], dtype=float)

    @property
    def width(self) -> int:
        """Columns every row has."""
        return min(len(r) for r in self.rows)


def _labels(line: str) -> list[str]:
    text = line.strip().lstrip("#").strip()
    if text.startswith("L ") or text.startswith("L\t"):  # SPEC-style "#L r G(r)"
        text = text[2:]
    tokens = [t for t in _SPLIT.split(text) if t]
    if not tokens or any(_is_number(t) for t in tokens) or "=" in text or ":" in text:
        return []
    return [t.lower() for t in tokens]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_table(path: str | Path, expected: str = "a target spectrum") -> Table:
    """Read ``path`` as a header followed by rows of numbers.

    Raises
    ------
    InputError
        Missing, unreadable or binary file; a non-numeric, NaN or infinite value in the data; no
        data rows.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise InputError(src, f"file not found (expected {expected})")
    try:
        text = path.read_text(errors="strict")
    except UnicodeDecodeError:
        raise InputError(
            src, "is not a text file (expected whitespace- or comma-separated numbers)"
        ) from None
    except OSError as exc:
        raise InputError(src, f"cannot be read ({exc.strerror or exc})") from None
    all_lines = text.splitlines()
    start = next((i + 1 for i, ln in enumerate(all_lines) if _START_DATA.match(ln.strip())), None)
    if start is None:
        start = next((i for i, ln in enumerate(all_lines) if _FLOAT.match(ln)), len(all_lines))
    header_lines = all_lines[:start]
    rows: list[list[float]] = []
    numbers: list[int] = []
    label_line = next((ln for ln in reversed(header_lines) if ln.strip()), "")
    for lineno, raw in enumerate(all_lines[start:], start=start + 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if not rows:
                label_line = line  # comment lines right after "start data": "#L r G(r) ..."
                header_lines.append(raw)
            continue
        tokens = [t for t in _SPLIT.split(line) if t]
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            if not rows and not any(_is_number(t) for t in tokens):
                label_line = line  # one row of column names (e.g. "r,G" in a CSV) before the data
                header_lines.append(raw)
                continue
            shown = line if len(line) <= 40 else line[:37] + "..."
            raise InputError(src, f"line {lineno} is not numeric: {shown!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise InputError(src, f"line {lineno} contains NaN or infinite values")
        rows.append(values)
        numbers.append(lineno)
    if not rows:
        raise InputError(src, "contains no data rows (expected whitespace- or comma-separated numbers)")
    return Table(rows=rows, lines=numbers, header="\n".join(header_lines), labels=_labels(label_line))


def columns(table: Table, cols: tuple[int, ...], src: str) -> np.ndarray:
    """The requested columns as an (n, len(cols)) array; every row must have them."""
    need = max(cols) + 1
    width = table.width
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


def check_abscissa(x: np.ndarray, lines: list[int], src: str, min_points: int) -> None:
    """Strictly increasing, at least ``min_points`` points; else one line naming the file and line."""
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
