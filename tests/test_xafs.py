"""XAFS processing (numpy, Larch conventions): FT windows, complex χ(R), E0 and edge-step normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import i0

from aso_workflows.spectra.xafs import find_e0, ftwindow, pre_edge, xftf

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


def _mu(e, e0=7112.0, step=2.0):
    rel = e - e0
    return (
        0.8
        + 1e-4 * (e - e0)
        + step * (0.5 + np.arctan(rel / 1.0) / np.pi) * (1 - 2e-4 * np.clip(rel, 0, None))
    )


def test_pre_edge_recovers_e0_and_the_edge_step():
    e = np.round(np.arange(6900.0, 7700.0, 0.5), 6)
    mu = _mu(e)
    assert find_e0(e, mu) == pytest.approx(7112.0, abs=0.3)
    pe = pre_edge(e, mu)
    assert pe.e0 == pytest.approx(7112.0, abs=0.3)
    # the arctan edge has tails ∝ 1/|E − E0| that lines cannot absorb: a few % on the step
    assert pe.edge_step == pytest.approx(2.0, rel=0.05)
    rel = e - pe.e0
    assert np.mean(pe.norm[(rel > -150) & (rel < -50)]) == pytest.approx(0.0, abs=0.02)
    assert np.mean(pe.flat[(rel > 150) & (rel < 500)]) == pytest.approx(1.0, abs=0.01)
    # norm keeps the post-edge slope (1 − 2e-4·e), flat removes it
    assert np.mean(pe.norm[(rel > 450) & (rel < 550)]) < 0.93
    # xraylarch's default ranges: from the second point (rounded to 5 eV) to half-way; 25 eV to the end
    assert (pe.pre1, pe.pre2, pe.norm1, pe.nnorm) == (-210.0, -105.0, 25.0, 2)
    with pytest.raises(ValueError, match="pre-edge range"):
        pre_edge(e, mu, pre1=-5.0, pre2=-4.0)
