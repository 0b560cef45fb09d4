"""XAFS transforms (numpy, Larch conventions): FT windows and complex χ(R)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import i0

from aso_workflows.spectra.xafs import ftwindow, xftf

K = np.round(np.arange(0.0, 15.0, 0.05), 10)


def test_hanning_window_has_sills_centred_on_kmin_and_kmax():
    w = ftwindow(K, 3.0, 12.0, dx=2.0, window="hanning")
    at = lambda k: w[np.argmin(np.abs(K - k))]  # noqa: E731
    assert at(3.0) == pytest.approx(0.5) and at(12.0) == pytest.approx(0.5)
    assert at(1.95) == 0.0 and at(13.05) == 0.0
    assert np.all(w[(K >= 4.0) & (K <= 11.0)] == 1.0)
    assert np.all(np.diff(w[(K >= 2.0) & (K <= 4.0)]) >= 0)


def test_kaiser_window_is_larchs_kaiser_bessel():
    dk = 3.0
    w = ftwindow(K, 3.0, 12.0, dx=dk, window="kaiser")
    x1, x4 = 3.0 - dk / 2, 12.0 + dk / 2
    cen, wid = (x1 + x4) / 2, (x4 - x1) / 2
    inside = (K > x1) & (K < x4)
    expected = (i0(dk * np.sqrt(1 - ((K[inside] - cen) / wid) ** 2)) - 1) / (i0(dk) - 1)
    assert np.allclose(w[inside], expected) and np.all(w[~inside] == 0)
    assert w.max() == pytest.approx(1.0, abs=1e-3)  # at the centre, and → 0 at the ends
    assert w[inside].min() < 0.05
    with pytest.raises(ValueError, match="unknown window"):
        ftwindow(K, 3, 12, window="welch")


def test_xftf_peak_of_one_shell_sits_below_its_distance_by_the_phase():
    k = np.round(np.arange(2.0, 14.0, 0.05), 10)
    chi = np.sin(2 * k * 2.5) * k**2  # no phase shift: |χ(R)| peaks at R = 2.5 Å
    r, chir = xftf(k, chi, rmax=6.0, kmin=3.0, kmax=13.0, dk=1.0, window="kaiser")
    assert r[np.argmax(np.abs(chir))] == pytest.approx(2.5, abs=0.04)
