"""The PDF simulator: peak positions, grid, batch = single, settings validation."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from scipy.signal import find_peaks

from aso_workflows.errors import InputError
from aso_workflows.spectra.pdf import PDFSimulator, biso_to_uiso


def first_peak(r: np.ndarray, g: np.ndarray, above: float = 1.5) -> float:
    """Position of the first local maximum of G(r) above ``above`` Å, refined by a parabola.

    Only maxima standing out by 10 % of the G(r) range count: with narrow peaks, Qmax termination
    ripples (period 2π/Qmax ≈ 0.35 Å) make small local maxima next to every peak.
    """
    idx, _ = find_peaks(g, prominence=0.1 * np.ptp(g))
    for i in idx:
        if r[i] > above:
            a, b, c = g[i - 1], g[i], g[i + 1]
            shift = 0.5 * (a - c) / (a - 2 * b + c)
            return float(r[i] + shift * (r[1] - r[0]))
    raise AssertionError("no peak found")


# A small Biso keeps peaks narrow: a G(r) = R(r)/r − 4πρ0·r peak sits below the pair distance by about
# σ²/d plus a baseline-slope term, ~0.04 Å for NiO at the reference Biso = 2 (σ² = 2·Uiso = 0.05 Å²).
SHARP = dict(biso=0.5)


@pytest.mark.parametrize(("name", "bond"), [("nio", 2.088), ("linio2", 1.970)])
def test_first_peak_at_the_ni_o_distance(request, name, bond):
    structure = request.getfixturevalue(name)
    dmin = float(np.min(structure.distance_matrix[np.triu_indices(len(structure), 1)]))
    assert dmin == pytest.approx(bond, abs=0.002)  # the fixture really has this bond
    spec = PDFSimulator(**SHARP).simulate(structure)
    assert first_peak(spec.x, spec.y) == pytest.approx(bond, abs=0.02)


def test_lattice_expansion_moves_first_peak_outward(linio2):
    sim = PDFSimulator(**SHARP)
    p0 = first_peak(*_xy(sim.simulate(linio2)))
    expanded = linio2.copy()
    expanded.scale_lattice(linio2.volume * 1.03**3)
    p1 = first_peak(*_xy(sim.simulate(expanded)))
    assert p1 / p0 == pytest.approx(1.03, abs=0.005)


def test_reference_grid_has_900_points_from_1_angstrom(nio):
    sim = PDFSimulator()
    spec = sim.simulate(nio)
    r = spec.x
    assert len(r) == 900 == len(spec.values)
    assert r[0] == 1.0
    assert r[-1] == pytest.approx(9.99, abs=1e-12)
    assert np.allclose(np.diff(r), 0.01, atol=1e-12)
    assert spec.grid == sim.grid()
    assert spec.technique == "pdf"
    assert spec.engine.startswith("diffpy.")


def test_custom_grid_excludes_rmax(nio):
    sim = PDFSimulator(rmin=1.5, rmax=5.0, rstep=0.05)
    spec = sim.simulate(nio)
    assert len(spec.values) == 70
    assert spec.x[-1] == pytest.approx(4.95)


def test_g_does_not_depend_on_rmin(linio2):
    """The termination ripples are computed from r ≈ 0 whatever rmin is: no edge effect at rmin."""
    full = PDFSimulator().simulate(linio2)
    part = PDFSimulator(rmin=2.5).simulate(linio2)
    assert part.x[0] == pytest.approx(2.5)
    assert np.allclose(part.y, full.y[full.x >= 2.5 - 1e-9], atol=1e-9)


def test_simulate_many_equals_simulate(linio2, nio, diamond):
    structures = [linio2, nio, diamond, linio2]
    sim = PDFSimulator()
    batch = sim.simulate_many(structures)
    single = [PDFSimulator().simulate(s) for s in structures]
    for a, b in zip(batch, single, strict=True):
        assert np.array_equal(a.y, b.y)
    assert np.array_equal(batch[0].y, batch[3].y)  # reusing the engine leaves no state behind


def test_biso_gives_gaussian_peak_of_variance_two_uiso(nio):
    """The first NiO peak of R(r) = r·G(r) + 4πρ0·r² is a Gaussian of σ² = 2·Uiso (uncorrelated)."""
    biso = 0.5
    sim = PDFSimulator(rmin=1.0, rmax=3.0, rstep=0.002, qmin=0.0, qmax=80.0, biso=biso)
    spec = sim.simulate(nio)
    r, g = spec.x, spec.y
    rho0 = len(nio) / nio.volume
    rdf = r * g + 4 * math.pi * rho0 * r**2
    w = (r > 2.088 - 0.4) & (r < 2.088 + 0.4)
    weights = rdf[w] / np.sum(rdf[w])
    mean = np.sum(weights * r[w])
    var = np.sum(weights * (r[w] - mean) ** 2)
    assert mean == pytest.approx(2.088, abs=0.005)
    assert var == pytest.approx(2 * biso_to_uiso(biso), rel=0.1)


def test_larger_biso_gives_lower_first_peak(nio):
    heights = []
    for biso in (0.3, 1.0, 2.0):
        spec = PDFSimulator(biso=biso).simulate(nio)
        heights.append(float(np.max(spec.y[(spec.x > 1.8) & (spec.x < 2.3)])))
    assert heights[0] > heights[1] > heights[2]


def test_qdamp_is_a_gaussian_envelope(linio2):
    """Instrumental Q resolution multiplies G(r) by exp(−(qdamp·r)²/2)."""
    qdamp = 0.08
    plain = PDFSimulator().simulate(linio2)
    damped = PDFSimulator(qdamp=qdamp).simulate(linio2)
    r = plain.x
    for lo, hi in [(1.5, 2.5), (4.0, 5.5), (8.0, 9.9)]:
        w = np.flatnonzero((r > lo) & (r < hi))
        i = w[np.argmax(np.abs(plain.y[w]))]
        assert damped.y[i] / plain.y[i] == pytest.approx(np.exp(-0.5 * (qdamp * r[i]) ** 2), rel=0.01)


def test_settings_record_the_engine_actually_used(nio):
    sim = PDFSimulator(engine="auto")
    d = sim.settings_dict()
    assert d["engine"] in ("srreal", "pdffit2")
    assert d["technique"] == "pdf"
    assert sim.simulate(nio).settings == d
    assert sim.settings_key() != PDFSimulator(biso=1.0).settings_key()


def test_simulator_pickles_without_its_engine(nio):
    sim = PDFSimulator()
    before = sim.simulate(nio)
    clone = pickle.loads(pickle.dumps(sim))
    assert np.array_equal(clone.simulate(nio).y, before.y)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (dict(rmin=5.0, rmax=2.0), "rmax"),
        (dict(rstep=0.0), "rstep"),
        (dict(rstep=-0.01), "rstep"),
        (dict(qmin=2.0, qmax=1.0), "qmax"),
        (dict(qmin=-1.0), "qmin"),
        (dict(rmin=0.0), "rmin"),
        (dict(biso=-1.0), "biso"),
        (dict(rmin="one"), "rmin"),
        (dict(engine="debye"), "engine"),
        (dict(rmin=1.0, rmax=1.005, rstep=0.01), "rstep"),
    ],
)
def test_bad_settings_name_the_field(settings, field):
    with pytest.raises(InputError) as err:
        PDFSimulator(**settings)
    assert err.value.source == field
    assert "\n" not in str(err.value)


def test_forcing_an_engine_that_does_not_import_is_an_input_error():
    pytest.importorskip("diffpy.pdffit2")
    try:
        import diffpy.srreal.pdfcalculator  # noqa: F401
    except Exception:
        with pytest.raises(InputError, match="srreal"):
            PDFSimulator(engine="srreal")
    else:
        pytest.skip("diffpy.srreal imports here")


def test_pdffit2_engine_version():
    assert PDFSimulator(engine="pdffit2").engine_version() == "diffpy.pdffit2 1.5.0"


def _xy(spec):
    return spec.x, spec.y


def test_registry_makes_a_pdf_simulator_and_names_bad_settings():
    from aso_workflows.spectra.registry import make_simulator

    sim = make_simulator("pdf", qmax=20.0, biso=1.0)
    assert isinstance(sim, PDFSimulator) and sim.qmax == 20.0 and sim.biso == 1.0
    with pytest.raises(InputError) as err:
        make_simulator("pdf", qmx=20.0)
    assert err.value.source == "pdf.settings"
    assert "qmx" in str(err.value) and "qmax" in str(err.value)  # lists what is allowed
    with pytest.raises(InputError) as err:
        make_simulator("xrd")
    assert err.value.source == "technique" and "pdf" in str(err.value)
