"""XAFS data processing shared by the FEFF simulators, the target readers and the fits.

Pure numpy, following the conventions of xraylarch (and so of Athena/Artemis) so that numbers can be
compared with those programs: the Fourier transform of k-weighted χ(k) and the edge-step
normalisation of μ(E).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["chir_magnitude", "normalize_xmu"]


def chir_magnitude(
    k: np.ndarray,
    chi_kw: np.ndarray,
    rmax: float,
    dk: float = 1.0,
    kstep: float = 0.05,
    nfft: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """|χ(R)| of a k-weighted χ(k): Hanning-windowed discrete Fourier transform.

    Same conventions as xraylarch's ``xftf`` (window ``"hanning"`` with sills of width ``dk``
    centred on the ends of the data range, χ(R) = kstep/√π · Σ w(k) k^w χ(k) e^{2ikR}, data placed
    on a uniform grid from k = 0 and zero-padded to ``nfft`` points, so R steps by π/(kstep·nfft)),
    so that |χ(R)| can be compared with Athena/Larch. Written with numpy instead of depending on
    xraylarch: the transform is a few lines, and xraylarch is a large install (GUI and FEFF binaries)
    needed for nothing else.

    Returns
    -------
    r, magnitude
        On ``0 ≤ R ≤ rmax`` (Å).
    """
    k = np.asarray(k, dtype=float)
    y = np.asarray(chi_kw, dtype=float)
    kmin, kmax = float(k[0]), float(k[-1])
    kk = kstep * np.arange(int(math.floor(kmax / kstep + 1e-6)) + 1)
    yy = np.where((kk >= kmin - 1e-9) & (kk <= kmax + 1e-9), np.interp(kk, k, y), 0.0)
    x1, x2, x3, x4 = kmin - dk / 2, kmin + dk / 2, kmax - dk / 2, kmax + dk / 2
    win = np.zeros_like(kk)
    win[(kk >= x2) & (kk <= x3)] = 1.0
    if dk > 0:
        lo = (kk >= x1) & (kk < x2)
        hi = (kk > x3) & (kk <= x4)
        win[lo] = np.sin(0.5 * np.pi * (kk[lo] - x1) / (x2 - x1)) ** 2
        win[hi] = np.cos(0.5 * np.pi * (kk[hi] - x3) / (x4 - x3)) ** 2
    ft = np.fft.fft(yy * win, n=nfft) * kstep / np.sqrt(np.pi)
    r = np.pi / (kstep * nfft) * np.arange(nfft // 2)
    keep = r <= rmax + 1e-9
    return r[keep], np.abs(ft[: nfft // 2])[keep]


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
