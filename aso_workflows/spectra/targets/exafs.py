"""EXAFS targets: χ(k) against k in Å⁻¹, returned k-weighted as the simulator's.

Read from plain columns (state ``read_options.data_kweight``), FEFF's ``xmu.dat`` (χ above the edge)
and ``chi.dat``, or an Athena/Demeter/Larch ``.chik`` export (the column label says the k-weight).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aso_workflows.errors import InputError
from aso_workflows.spectra.targets.base import TargetData, TargetFile, TargetReader, athena_kind
from aso_workflows.spectra.textfile import columns

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator

__all__ = ["EXAFSTargetReader", "check_absorber_edge"]

# Athena/Larch chi(k) column labels and the k-weight of the χ they hold.
_CHI_LABELS = {"chi": 0.0, "chik": 1.0, "chik1": 1.0, "chik2": 2.0, "chik3": 3.0}


@dataclass
class EXAFSData(TargetData):
    """EXAFS data and the k-weight of ``y`` as read (``None``: not known)."""

    data_kweight: float | None = None


def check_absorber_edge(simulator: Simulator, hints: dict, src: str) -> None:
    """Refuse an XAS file whose header names another absorber or edge than the simulator's settings."""
    for key in ("absorber", "edge"):
        mine = getattr(simulator, key, None)
        if mine and hints.get(key) and hints[key] != mine:
            raise InputError(
                src, f"is {key} {hints[key]} data (its header says so) but settings.{key} is {mine!r}"
            )


class EXAFSTargetReader(TargetReader):
    """χ(k) from columns, FEFF ``xmu.dat``/``chi.dat`` or an Athena ``.chik``; k-weighted after reading."""

    technique = "exafs"
    RAW_MU = True

    def check(self, simulator: Simulator, hints: dict, src: str) -> None:
        check_absorber_edge(simulator, hints, src)

    def read(self, f: TargetFile) -> EXAFSData:
        table = f.table
        if f.format == "columns":
            data = columns(table, f.options.columns, f.src)
            return EXAFSData(
                x=data[:, 0], y=data[:, 1], lines=table.lines, data_kweight=f.options.data_kweight
            )
        if f.format == "xmu":  # χ above the edge, where FEFF's k column is ≥ 0
            data = columns(table, (0, 1, 2, 3, 4, 5), f.src)
            keep = data[:, 2] >= 0
            lines = [n for n, k in zip(table.lines, keep, strict=True) if k]
            return EXAFSData(x=data[keep, 2], y=data[keep, 5], lines=lines, data_kweight=0.0)
        if f.format == "chi":
            data = columns(table, (0, 1), f.src)
            return EXAFSData(x=data[:, 0], y=data[:, 1], lines=table.lines, data_kweight=0.0)
        return _read_athena(f)

    def finish(self, data: TargetData, f: TargetFile) -> TargetData:
        """Bring χ to the k-weight asked for (``read_options.kweight``) or to the simulator's."""
        assert isinstance(data, EXAFSData)
        data.y, data.settings["kweight"] = _kweighted(data, f)
        return data


def _read_athena(f: TargetFile) -> EXAFSData:
    """χ(k) of an Athena ``.chik`` export; its column label gives the k-weight."""
    kind = athena_kind(f.path, f.table)
    if kind != "chik":
        raise InputError(
            f.src,
            f"is an Athena μ(E) file ({'normalised' if kind == 'nor' else 'raw'}); a exafs target needs χ(k) (.chik)",
        )
    o, labels = f.options, f.table.labels
    ycol = o.columns[1] if o.columns != (0, 1) else (labels.index("chi") if "chi" in labels else 1)
    data = columns(f.table, (0, ycol), f.src)
    label = labels[ycol] if ycol < len(labels) else ""
    weight = _CHI_LABELS.get(label)
    if weight is None and o.data_kweight is None:
        raise InputError(
            f.src,
            f"column {ycol} ({label or 'unlabelled'}) does not say its k-weight; set read_options.data_kweight",
        )
    if weight is not None and o.data_kweight is not None and weight != o.data_kweight:
        raise InputError(
            f.src,
            f"column {ycol} is {label!r} (k-weight {weight:g}) but read_options.data_kweight is {o.data_kweight:g}",
        )
    return EXAFSData(
        x=data[:, 0],
        y=data[:, 1],
        lines=f.table.lines,
        data_kweight=weight if weight is not None else o.data_kweight,
    )


def _kweighted(r: EXAFSData, f: TargetFile) -> tuple[np.ndarray, float | None]:
    """EXAFS values k-weighted as asked, and their k-weight (``None`` when unknown)."""
    o, src = f.options, f.src
    base = r.data_kweight
    sim_w = getattr(f.simulator, "kweight", None) if f.simulator is not None else None
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
