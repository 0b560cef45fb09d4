"""XAFS transforms shared by the FEFF simulators and the fits: windows, χ(R), FEFF μ normalisation.

Pure numpy, following the conventions of xraylarch (and so of Athena/Artemis) so that numbers can be
compared with those programs: the Fourier-transform windows and transform of k-weighted χ(k) agree
with Larch's ``ftwindow``/``xftf`` to 1e-13 (``benchmarks/xafs_vs_larch.py``), so scoring spectra needs
no Larch. Measured μ(E) is processed by Larch itself (:mod:`~aso_workflows.spectra.xas_processing`):
a numpy ``pre_edge``/``find_e0`` written here earlier gave edge steps 0.07 % (Cu foil) and 0.20 %
(Ni foil) off Larch's and E0 0.03–0.07 eV off, and was removed.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "ETOK",
    "WINDOWS",
    "ftwindow",
    "xftf",
    "chir_magnitude",
    "normalize_xmu",
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
