"""What every target reader shares: the file as read, its header hints, its format, the reader interface.

A technique's :class:`TargetReader` (named by its entry in :mod:`aso_workflows.spectra.techniques`)
turns a :class:`TargetFile` (the numeric table, its format and header hints, the read options, the
simulator) into :class:`TargetData` (abscissa, values, uncertainties, what to record).
:func:`~aso_workflows.spectra.targets.reading.read_target` does the rest the same way for every technique:
the abscissa check, the grid, the :class:`~aso_workflows.spectra.spectrum.Spectrum`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from aso_workflows.errors import InputError
from aso_workflows.spectra.targets.options import ReadOptions
from aso_workflows.spectra.textfile import Table, columns

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator
    from aso_workflows.spectra.spectrum import Grid, Spectrum

__all__ = [
    "TargetFile",
    "TargetData",
    "TargetReader",
    "detect_format",
    "athena_kind",
    "EXPECTED",
]

EXPECTED = "a target spectrum: two-column text, a PDFgetX/N .gr, xmu.dat, chi.dat or an Athena file"
"""What a target file should be (the end of the one-line error about a file that is none)."""

_ATHENA_SUFFIXES = {".xmu": "xmu", ".nor": "nor", ".chik": "chik"}


# ---- formats --------------------------------------------------------------------------
def detect_format(path: Path, table: Table) -> str:
    """The format of a file read with ``format: auto``: by its name, header and column labels."""
    name = path.name.lower()
    labels = set(table.labels) - {"@#"}
    if name == "xmu.dat" or {"omega", "mu", "mu0"} <= labels:
        return "xmu"
    if name == "chi.dat" or {"k", "chi", "mag", "phase"} <= labels:
        return "chi"
    if path.suffix.lower() in _ATHENA_SUFFIXES or re.search(r"athena|demeter", table.header, re.I):
        return "athena"
    return "columns"


def athena_kind(path: Path, table: Table) -> str:
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


# ---- the reader interface -------------------------------------------------------------------------------
@dataclass
class TargetFile:
    """A target file as read: the table, its format, header hints, the read options and the simulator."""

    path: Path
    table: Table
    format: str
    options: ReadOptions
    hints: dict
    simulator: Simulator | None = None

    @property
    def src(self) -> str:
        """The file's name as errors give it."""
        return str(self.path)


@dataclass
class TargetData:
    """What a reader found: abscissa, values (and their uncertainties), for the spectrum's record.

    Attributes
    ----------
    x, y, lines
        Abscissa, values and the file line of each point.
    dy
        Uncertainties of ``y`` (PDF dG), kept as the spectrum's ``extra["dy"]``.
    grid
        The grid's name when it is not the technique's own (XANES on absolute energies: ``"E"``).
    settings
        What the reader adds to the spectrum's ``settings`` (XANES ``normalisation``, ``e0``; EXAFS
        ``kweight``).
    """

    x: np.ndarray
    y: np.ndarray
    lines: list[int]
    dy: np.ndarray | None = None
    grid: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


class TargetReader:
    """Reads target files of one technique.

    The default reads two columns (``read_options.columns``) of a ``columns`` file and refuses the other
    formats; techniques override :meth:`read` for their formats, :meth:`check` to refuse a file whose
    header contradicts the simulator, :meth:`finish` to transform checked values (EXAFS k-weighting) and
    :meth:`check_grid` to refuse a grid the data cannot be put on.
    """

    technique: ClassVar[str] = ""
    RAW_MU: ClassVar[bool] = False
    """Whether the technique's targets may be raw μ(E) (:meth:`read_raw_mu`): XAS."""

    def read_raw_mu(
        self, path: str | Path, processing: Any, simulator: Simulator | None, grid: Grid | None
    ) -> Spectrum:
        """The target from a raw μ(E) file (XAS readers: processed by xraylarch).

        Raises
        ------
        InputError
            The technique has no raw μ(E) targets, or the file cannot be read or processed.
        """
        if not self.RAW_MU:
            raise InputError(
                path, f"is raw μ(E) (XAS: XDI, an Athena project, processing); not a {self.technique} target"
            )
        from aso_workflows.spectra.xas_targets import read_mu_target

        return read_mu_target(path, self.technique, processing, simulator=simulator, grid=grid)

    def check(self, simulator: Simulator, hints: dict, src: str) -> None:
        """Refuse a file whose header ``hints`` contradict the simulator's settings (one line)."""

    def read(self, f: TargetFile) -> TargetData:
        """The data of ``f`` (before the abscissa is checked)."""
        if f.format != "columns":
            raise InputError(
                f.src,
                f"is a {f.format} file; a {self.technique} target needs two columns (read_options.columns)",
            )
        return self.read_columns(f)

    def read_columns(self, f: TargetFile) -> TargetData:
        """Columns ``read_options.columns`` of a plain table."""
        data = columns(f.table, f.options.columns, f.src)
        return TargetData(x=data[:, 0], y=data[:, 1], lines=f.table.lines)

    def finish(self, data: TargetData, f: TargetFile) -> TargetData:
        """``data`` after its abscissa was checked (default: unchanged)."""
        return data

    def check_grid(self, data: TargetData, grid: Grid, src: str) -> None:
        """Refuse a ``grid`` that ``data`` cannot be interpolated onto (beyond its range, checked for all)."""
