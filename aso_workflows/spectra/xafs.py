"""XAFS data processing shared by the FEFF simulators, the target readers and the fits.

Pure numpy, following the conventions of xraylarch (and so of Athena/Artemis) so that numbers can be
compared with those programs: the Fourier transform of k-weighted χ(k) and the edge-step
normalisation of μ(E).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ETOK",
    "WINDOWS",
    "ftwindow",
    "xftf",
    "chir_magnitude",
    "normalize_xmu",
    "find_e0",
    "PreEdge",
    "pre_edge",
]


ETOK = 1.0 / 3.80998
"""k² (Å⁻²) per eV of photo-electron energy: k = sqrt(ETOK·(E − E0)) (FEFF's ħ²/2m = 3.80998 eV Å²)."""

WINDOWS: tuple[str, ...] = ("hanning", "kaiser")


def ftwindow(x: np.ndarray, xmin: float, xmax: float, dx: float = 1.0, window: str = "hanning") -> np.ndarray:
    """A Fourier-transform window on ``x``, as xraylarch's ``ftwindow`` defines it.

    ``"hanning"``: 1 on ``[xmin + dx/2, xmax − dx/2]``, sin²/cos² sills of width ``dx`` centred on
    ``xmin`` and ``xmax``, 0 beyond. ``"kaiser"``: Larch's Kaiser–Bessel window
    ``(I0(dx·sqrt(1 − ((x − c)/w)²)) − 1) / (I0(dx) − 1)`` over ``[xmin − dx/2, xmax + dx/2]``
    (centre c, half-width w), 0 outside; ``dx`` is both its shape parameter and its extension.
    Checked against xraylarch 2026.3.1's ``ftwindow`` (identical on a 0.05 Å⁻¹ grid).

    Raises
    ------
    ValueError
        Unknown window name, or ``xmax <= xmin``.
    """
    x = np.asarray(x, dtype=float)
    name = str(window).strip().lower()
    if name not in WINDOWS:
        raise ValueError(f"unknown window {window!r}; expected one of {list(WINDOWS)}")
    if xmax <= xmin:
        raise ValueError(f"window range [{xmin:g}, {xmax:g}] is empty")
    x1, x2, x3, x4 = xmin - dx / 2, xmin + dx / 2, xmax - dx / 2, xmax + dx / 2
    if name == "kaiser":
        from scipy.special import i0

        cen, wid = (x4 + x1) / 2, (x4 - x1) / 2
        arg = np.clip(1.0 - ((x - cen) / wid) ** 2, 0.0, None)
        return (i0(dx * np.sqrt(arg)) - 1.0) / max(1e-10, float(i0(dx)) - 1.0)
    win = np.zeros_like(x)
    win[(x >= x2) & (x <= x3)] = 1.0
    if dx > 0:
        lo = (x >= x1) & (x < x2)
        hi = (x > x3) & (x <= x4)
        win[lo] = np.sin(0.5 * np.pi * (x[lo] - x1) / (x2 - x1)) ** 2
        win[hi] = np.cos(0.5 * np.pi * (x[hi] - x3) / (x4 - x3)) ** 2
    return win


def xftf(
    k: np.ndarray,
    chi_kw: np.ndarray,
    rmax: float,
    kmin: float | None = None,
    kmax: float | None = None,
    dk: float = 1.0,
    window: str = "hanning",
    kstep: float = 0.05,
    nfft: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Complex χ(R) of a k-weighted χ(k), with xraylarch's ``xftf`` conventions.

    The data are put on a uniform grid from k = 0 (zero outside their range), multiplied by
    :func:`ftwindow` over ``[kmin, kmax]`` (default: the data range), and transformed:
    χ(R) = kstep/√π · Σ w(k) k^w χ(k) e^{2ikR}, zero-padded to ``nfft`` points, so R steps by
    π/(kstep·nfft). Written with numpy instead of depending on xraylarch: the transform is a few
    lines, and xraylarch is a large install (GUI and FEFF binaries) needed for nothing else.

    Returns
    -------
    r, chir
        On ``0 ≤ R ≤ rmax`` (Å); ``chir`` is complex.
    """
    k = np.asarray(k, dtype=float)
    y = np.asarray(chi_kw, dtype=float)
    k0, k1 = float(k[0]), float(k[-1])
    kmin = k0 if kmin is None else float(kmin)
    kmax = k1 if kmax is None else float(kmax)
    kk = kstep * np.arange(int(math.floor(k1 / kstep + 1e-6)) + 1)
    yy = np.where((kk >= k0 - 1e-9) & (kk <= k1 + 1e-9), np.interp(kk, k, y), 0.0)
    win = ftwindow(kk, kmin, kmax, dk, window)
    ft = np.fft.fft(yy * win, n=nfft) * kstep / np.sqrt(np.pi)
    r = np.pi / (kstep * nfft) * np.arange(nfft // 2)
    keep = r <= rmax + 1e-9
    return r[keep], ft[: nfft // 2][keep]


def chir_magnitude(
    k: np.ndarray,
    chi_kw: np.ndarray,
    rmax: float,
    dk: float = 1.0,
    kstep: float = 0.05,
    nfft: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """|χ(R)| of a k-weighted χ(k): :func:`xftf` with a Hanning window over the data range.

    The window's sills (width ``dk``) are centred on the ends of the data, as Athena/Larch do by
    default, so that |χ(R)| can be compared with those programs.

    Returns
    -------
    r, magnitude
        On ``0 ≤ R ≤ rmax`` (Å).
    """
    r, chir = xftf(k, chi_kw, rmax, dk=dk, window="hanning", kstep=kstep, nfft=nfft)
    return r, np.abs(chir)


def normalize_xmu(
    e: np.ndarray, mu: np.ndarray, post_edge: tuple[float, float] = (30.0, 100.0)
) -> tuple[np.ndarray, float]:
    """Edge-step normalised and flattened μ(E), as Athena/Larch's ``flat`` spectrum.

    FEFF computes the absorber's edge alone, so its μ has no pre-edge background (the pre-edge line
    of Athena-style normalisation is zero). A straight line is fitted to μ over ``post_edge`` (eV
    above E0); the edge step is that line at E0 (e = 0). Below E0 the result is μ / step; above E0
    the line's slope is removed as well (μ − line(e) + step) / step, so the post-edge oscillates
    around 1 (its mean over ``post_edge`` is exactly 1).

    Returns
    -------
    normalised μ, edge step
    """
    e = np.asarray(e, dtype=float)
    mu = np.asarray(mu, dtype=float)
    sel = (e >= post_edge[0]) & (e <= post_edge[1])
    if sel.sum() < 3:
        raise ValueError(f"fewer than 3 points of μ(E) between {post_edge[0]:g} and {post_edge[1]:g} eV")
    slope, intercept = np.polyfit(e[sel], mu[sel], 1)
    step = float(intercept)  # the line at e = 0
    if not np.isfinite(step) or step <= 0:
        raise ValueError(f"edge step is {step:g} (expected > 0)")
    flat = np.where(e > 0, mu - slope * e, mu) / step
    return flat, step


def find_e0(energy: np.ndarray, mu: np.ndarray) -> float:
    """The edge energy E0: where dμ/dE is largest, as Athena/Larch pick it by default.

    The derivative is taken on the data as they are (``numpy.gradient``, which handles uneven
    steps) after a 3-point running mean, ignoring the first and last 5 % of the points where
    glitches and truncation live; the maximum is refined by a parabola through its neighbours.

    Raises
    ------
    ValueError
        Fewer than 10 points.
    """
    e = np.asarray(energy, dtype=float)
    m = np.asarray(mu, dtype=float)
    if len(e) < 10:
        raise ValueError(f"need at least 10 points to find E0, got {len(e)}")
    smooth = np.convolve(m, np.ones(3) / 3, mode="same")
    smooth[0], smooth[-1] = m[0], m[-1]
    d = np.gradient(smooth, e)
    lo, hi = max(1, len(e) // 20), min(len(e) - 1, len(e) - len(e) // 20)
    i = lo + int(np.argmax(d[lo:hi]))
    if 0 < i < len(e) - 1:
        y0, y1, y2 = d[i - 1], d[i], d[i + 1]
        den = y0 - 2 * y1 + y2
        if den < 0:  # a real maximum: refine between the neighbours
            shift = 0.5 * (y0 - y2) / den
            return float(np.interp(i + shift, np.arange(len(e)), e))
    return float(e[i])


@dataclass
class PreEdge:
    """Result of :func:`pre_edge` (names as in Larch's ``pre_edge``).

    Attributes
    ----------
    e0, edge_step
        Edge energy (eV, absolute) and edge step.
    norm
        (μ − pre-edge line) / edge step.
    flat
        ``norm`` with the post-edge curvature removed above E0 (oscillates around 1).
    pre1, pre2, norm1, norm2, nnorm
        The ranges (eV relative to E0) and post-edge polynomial degree actually used.
    """

    e0: float
    edge_step: float
    norm: np.ndarray
    flat: np.ndarray
    pre1: float
    pre2: float
    norm1: float
    norm2: float
    nnorm: int


def pre_edge(
    energy: np.ndarray,
    mu: np.ndarray,
    e0: float | None = None,
    pre1: float | None = None,
    pre2: float | None = None,
    norm1: float | None = None,
    norm2: float | None = None,
    nnorm: int | None = None,
) -> PreEdge:
    """Athena/Larch edge-step normalisation of a measured μ(E).

    A straight line fitted to μ over ``[E0 + pre1, E0 + pre2]`` is the pre-edge background; a
    polynomial of degree ``nnorm`` fitted to μ minus that line over ``[E0 + norm1, E0 + norm2]`` is the
    post-edge line, and its value at E0 the edge step. ``norm`` = (μ − pre-edge)/step; ``flat`` also
    removes the post-edge polynomial's departure from the step above E0 — what Athena plots as
    "flattened normalised μ(E)" and what the XANES simulator reports for FEFF's μ.

    Defaults are xraylarch's (2026.3): ``pre1`` = the second point, rounded to 5 eV (2 eV when fewer
    than 20 points precede E0); ``pre2 = pre1/2``; ``norm2`` = the last point, rounded to 5 eV;
    ``norm1 = min(25, norm2/15)`` rounded to 5 eV; ``nnorm`` = 2 when the post-edge range spans 300 eV
    or more, 1 from 30 eV, else 0. ``e0`` defaults to :func:`find_e0`. On a synthetic Ni K edge the
    flattened spectrum agrees with Larch's ``pre_edge`` to 2e-4 with the same E0 and ranges. The
    simulator's FEFF μ has no pre-edge, so it uses :func:`normalize_xmu`.

    Raises
    ------
    ValueError
        A range with fewer than 3 points, or a non-positive edge step.
    """
    e = np.asarray(energy, dtype=float)
    m = np.asarray(mu, dtype=float)
    if e0 is None:
        e0 = find_e0(e, m)
    rel = e - e0
    if pre1 is None:
        step_to = 5.0 if np.sum(rel < 0) > 20 else 2.0
        pre1 = step_to * round(float(rel[1]) / step_to)
    pre1 = max(pre1, float(rel[0]))
    if pre2 is None:
        pre2 = 0.5 * pre1
    if norm2 is None:
        norm2 = 5.0 * round(float(rel[-1]) / 5.0)
    norm2 = min(norm2, float(rel[-1]))
    if norm1 is None:
        norm1 = min(25.0, 5.0 * round(norm2 / 15.0))
    if nnorm is None:
        span = norm2 - norm1
        nnorm = 2 if span >= 300 else 1 if span >= 30 else 0
    pre = (rel >= pre1) & (rel <= pre2)
    if pre.sum() < 3:
        raise ValueError(f"fewer than 3 points of μ(E) in the pre-edge range [{pre1:g}, {pre2:g}] eV from E0")
    pre_line = np.polyval(np.polyfit(e[pre], m[pre], 1), e)
    post = (rel >= norm1) & (rel <= norm2)
    if post.sum() < max(3, nnorm + 2):
        raise ValueError(
            f"fewer than {max(3, nnorm + 2)} points of μ(E) in the normalisation range [{norm1:g}, {norm2:g}] eV"
        )
    coef = np.polyfit(rel[post], m[post] - pre_line[post], int(nnorm))
    post_line = np.polyval(coef, rel)
    step = float(np.polyval(coef, 0.0))
    if not np.isfinite(step) or step <= 0:
        raise ValueError(f"edge step is {step:g} (expected > 0): is E0 = {e0:g} eV at the edge?")
    norm = (m - pre_line) / step
    flat = np.where(rel > 0, (m - pre_line - post_line) / step + 1.0, norm)
    return PreEdge(
        e0=float(e0),
        edge_step=step,
        norm=norm,
        flat=flat,
        pre1=float(pre1),
        pre2=float(pre2),
        norm1=float(norm1),
        norm2=float(norm2),
        nnorm=int(nnorm),
    )
