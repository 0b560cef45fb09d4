"""Features of a spectrum that people read off it: peak positions, the first EXAFS shell."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from aso_workflows.spectra.spectrum import Spectrum

__all__ = ["peak_positions", "first_shell", "exafs_summary"]


def peak_positions(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, n: int = 3
) -> list[float]:
    """Positions of the first ``n`` clear local maxima (prominence ≥ 5 % of the value range)."""
    import numpy as np
    from scipy.signal import find_peaks

    y = np.asarray(y, dtype=float)
    span = float(np.ptp(y)) if y.size else 0.0
    if span == 0:
        return []
    idx, _ = find_peaks(y, prominence=0.05 * span)
    return [float(x[i]) for i in idx[:n]]


def first_shell(spectrum: Spectrum) -> float | None:
    """R of the largest |χ(R)| peak, if the EXAFS spectrum carries ``extra['r']``/``extra['chir_mag']``."""
    import numpy as np

    r, mag = spectrum.extra.get("r"), spectrum.extra.get("chir_mag")
    if not r or not mag or len(r) != len(mag):
        return None
    r, mag = np.asarray(r, dtype=float), np.asarray(mag, dtype=float)
    inside = r > 0.8  # skip the low-R background below any physical bond
    if not inside.any():
        return None
    return float(r[inside][np.argmax(mag[inside])])


def exafs_summary(spectrum: Spectrum) -> list[tuple[str, str]]:
    """``aso simulate``'s extra summary row of an EXAFS spectrum: the first shell's R, when known."""
    r1 = first_shell(spectrum)
    return [] if r1 is None else [("|χ(R)| first shell", f"{r1:.3f} Å")]
