"""PDF targets: G(r) against r in Å, from plain columns or a PDFgetX2/X3/N ``.gr`` file.

A fourth column of a PDF file is dG(r) (PDFgui's rule: used when every value is > 0), kept as
``extra["dy"]`` for ``fit: {weights: dG}``; ``read_options.dy_column`` picks another column or none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from aso_workflows.errors import InputError
from aso_workflows.spectra.targets.base import TargetData, TargetFile, TargetReader
from aso_workflows.spectra.textfile import columns

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator

__all__ = ["PDFTargetReader"]


class PDFTargetReader(TargetReader):
    """G(r) from two columns (and dG(r) from a fourth); XAS formats are refused."""

    technique = "pdf"

    def check(self, simulator: Simulator, hints: dict, src: str) -> None:
        """Refuse a file whose header names the other radiation than the simulator's."""
        radiation = getattr(simulator, "radiation", None)
        if radiation and hints.get("radiation") and hints["radiation"] != radiation:
            raise InputError(
                src,
                f"is {hints['radiation']} PDF data (its header says so) but the target's settings.radiation is "
                f"{radiation!r}; set radiation: {hints['radiation']}",
            )

    def read(self, f: TargetFile) -> TargetData:
        if f.format == "xmu":
            raise InputError(f.src, "is a FEFF xmu.dat file; a PDF target needs r and G(r) columns")
        if f.format == "chi":
            raise InputError(f.src, "is a FEFF chi.dat file (k, chi, mag, phase); it cannot be a pdf target")
        if f.format == "athena":
            raise InputError(f.src, "is an Athena/Demeter XAS file; a PDF target needs r and G(r) columns")
        _not_reciprocal(f)
        data = self.read_columns(f)
        data.dy = _dy(f)
        return data


def _not_reciprocal(f: TargetFile) -> None:
    """Refuse a file whose abscissa is labelled Q (S(Q), F(Q), I(Q) from a reduction program): a PDF
    target is G(r) against r (one line naming what the column is)."""
    labels = f.table.labels
    x = f.options.columns[0] if f.options.columns else 0
    if x < len(labels) and labels[x].split("(")[0].strip() in ("q", "qq", "q[1/a]", "q(1/a)"):
        y = labels[f.options.columns[1]] if len(labels) > f.options.columns[1] else "?"
        raise InputError(
            f.src,
            f"its columns are {labels[x]!r}, {y!r}: reciprocal space (S(Q)/F(Q)/I(Q)); a PDF target needs r "
            "(Å) and G(r) — transform it first (PDFgetX3/PDFgetN3) and give the .gr file",
        )


def _dy(f: TargetFile) -> np.ndarray | None:
    """The uncertainties dG of a PDF file (``read_options.dy_column``), or ``None``."""
    o, table = f.options, f.table
    if o.dy_column == "none":
        return None
    if o.dy_column == "auto":
        if table.width < 4 or o.columns != (0, 1):
            return None
        dy = table.column(3)
        return dy if np.all(dy > 0) else None
    dy = columns(table, (int(o.dy_column),), f.src)[:, 0]
    if np.any(dy <= 0):
        i = int(np.flatnonzero(dy <= 0)[0])
        raise InputError(f.src, f"dG at line {table.lines[i]} is {dy[i]:g}; uncertainties must be > 0")
    return dy
