"""The PDF simulator: peak positions, grid, batch = single, settings validation."""

from __future__ import annotations

import math
import pickle
from typing import Any

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
SHARP: dict[str, Any] = dict(biso=0.5)


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
        (dict(radiation="electron"), "radiation"),
        (dict(delta2=-1.0), "delta2"),
        (dict(biso={"Ni": -0.5}), "biso"),
        (dict(biso={"Xx": 0.5}), "biso"),
        (dict(biso={}), "biso"),
    ],
)
def test_bad_settings_name_the_field(settings, field):
    from pydantic import ValidationError

    from aso_workflows.spectra.registry import make_simulator

    with pytest.raises(InputError) as err:
        make_simulator("pdf", **settings)
    assert err.value.source == field
    assert "\n" not in str(err.value)
    with pytest.raises(ValidationError):  # built directly: pydantic's error, naming the same field
        PDFSimulator(**settings)


def test_forcing_an_engine_that_does_not_import_is_an_input_error():
    pytest.importorskip("diffpy.pdffit2")
    try:
        import diffpy.srreal.pdfcalculator  # noqa: F401
    except Exception:
        from aso_workflows.spectra.registry import make_simulator

        with pytest.raises(InputError, match="srreal"):
            make_simulator("pdf", engine="srreal")
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


# ---- radiation, per-element Biso, correlated motion ------------------------------------------------
@pytest.fixture
def mno():
    """Rock-salt MnO, a = 4.445 Å: Mn has a negative neutron scattering length (−3.73 fm)."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.445), ["Mn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _pdffit2_direct(structure, stype: str, uiso: dict, qmax: float, r_lo: float, n: int, rstep: float):
    """G(r) straight from pdffit2 (every atom its element's Uiso), on r_lo + i·rstep."""
    import io

    import diffpy.pdffit2 as pdffit2
    from diffpy.structure import Atom, Lattice
    from diffpy.structure import Structure as DStructure

    pdffit2.redirect_stdout(io.StringIO())
    lat = Lattice(*structure.lattice.abc, *structure.lattice.angles)
    atoms = [
        Atom(s.specie.symbol, xyz=s.frac_coords, Uisoequiv=uiso[s.specie.symbol], lattice=lat)
        for s in structure
    ]
    pf = pdffit2.PdfFit()
    pf.add_structure(DStructure(atoms=atoms, lattice=lat))
    pf.alloc(stype, qmax, 0.0, r_lo, r_lo + (n - 1) * rstep, n)
    pf.calc()
    return np.asarray(pf.getR()), np.asarray(pf.getpdf_fit()), pf


def test_neutron_pdf_is_pdffit2s_and_a_negative_scattering_length_gives_negative_peaks(mno):
    """Sign: Mn–O pairs (b_Mn < 0 < b_O) give a negative first peak with neutrons, positive with X-rays."""
    biso = {"Mn": 0.3, "O": 0.6}
    neutron = PDFSimulator(radiation="neutron", biso=biso, qmax=25.0).simulate(mno)
    xray = PDFSimulator(radiation="xray", biso=biso, qmax=25.0).simulate(mno)
    # the same numbers as pdffit2 itself with scattering type "N" and per-atom Uiso (computed from
    # r = 0.01 Å, as the simulator does, and compared on its grid)
    r, g, pf = _pdffit2_direct(mno, "N", biso_to_uiso(biso), 25.0, 0.01, 999, 0.01)
    on_grid = np.isin(np.round(r, 6), np.round(neutron.x, 6))
    assert np.allclose(neutron.y, g[on_grid], atol=1e-9)
    assert pf.get_scat("N", "Mn") < 0 < pf.get_scat("N", "O")
    at = {d: int(np.argmin(np.abs(neutron.x - d))) for d in (4.445 / 2, 4.445 / math.sqrt(2))}
    mn_o, like = at[4.445 / 2], at[4.445 / math.sqrt(2)]  # Mn–O; Mn–Mn and O–O
    assert neutron.y[mn_o] < -0.2 * np.ptp(neutron.y)  # a strongly negative Mn–O peak
    assert xray.y[mn_o] > 0.1 * np.ptp(xray.y)  # a positive one with X-rays
    assert neutron.y[like] > 0.2 * np.ptp(neutron.y)  # like pairs weigh b² > 0
    assert neutron.settings["radiation"] == "neutron" and "radiation" not in xray.settings


@pytest.mark.parametrize(("radiation", "stype"), [("neutron", "N"), ("xray", "X")])
def test_peak_areas_weigh_pairs_by_scattering_length(mno, radiation, stype):
    """Weight: in R(r) = r·G(r) + 4πρ0r², the Mn–O shell's area is 6·b_Mn·b_O/⟨b⟩² per atom and the
    second shell's 6·(b_Mn² + b_O²)/⟨b⟩² — the scattering lengths (form factors) of pdffit2's tables."""
    sim = PDFSimulator(radiation=radiation, qmin=0.0, qmax=60.0, biso=0.2, rmin=1.0, rmax=4.0, rstep=0.002)
    spec = sim.simulate(mno)
    r, g = spec.x, spec.y
    rdf = r * g + 4 * math.pi * len(mno) / mno.volume * r**2

    def area(d):
        w = (r > d - 0.4) & (r < d + 0.4)
        return float(np.trapezoid(rdf[w], r[w]))

    _, _, pf = _pdffit2_direct(mno, stype, {"Mn": 0.0025, "O": 0.0025}, 20.0, 1.0, 10, 0.1)
    b_mn, b_o = pf.get_scat(stype, "Mn"), pf.get_scat(stype, "O")
    mean_b2 = ((b_mn + b_o) / 2) ** 2
    assert area(4.445 / 2) == pytest.approx(6 * b_mn * b_o / mean_b2, rel=1e-3)
    assert area(4.445 / math.sqrt(2)) == pytest.approx(6 * (b_mn**2 + b_o**2) / mean_b2, rel=1e-3)


def test_cli_simulates_the_neutron_pdf(tmp_path, mno):
    """``aso simulate STRUCTURE --technique pdf -s radiation=neutron`` gives the neutron PDF."""
    import json

    from typer.testing import CliRunner

    from aso_workflows.cli import app

    path = tmp_path / "MnO.cif"
    mno.to(filename=str(path))
    out = CliRunner().invoke(
        app, ["simulate", str(path), "--technique", "pdf", "-s", "radiation=neutron", "--json"]
    )
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    from aso_workflows.structures import load_structure

    expected = PDFSimulator(radiation="neutron").simulate(load_structure(path))
    assert doc["settings"]["radiation"] == "neutron"
    assert np.allclose(doc["values"], expected.y, atol=1e-12)


def test_per_element_biso(nio):
    """One Biso per element: a dict of equal values is the single number; a larger Biso of O lowers
    the Ni–O peak; an element without a value is refused."""
    same = PDFSimulator(biso=0.5).simulate(nio)
    as_dict = PDFSimulator(biso={"Ni": 0.5, "O": 0.5}).simulate(nio)
    assert np.array_equal(same.y, as_dict.y)
    soft_o = PDFSimulator(biso={"Ni": 0.5, "O": 2.0}).simulate(nio)
    first = (same.x > 1.9) & (same.x < 2.3)
    assert soft_o.y[first].max() < same.y[first].max()  # Ni–O involves O
    with pytest.raises(InputError, match="no value for"):
        PDFSimulator(biso={"Ni": 0.5}).simulate(nio)


def test_delta2_sharpens_the_nearest_neighbour_peak(nio):
    plain = PDFSimulator(biso=1.0).simulate(nio)
    sharp = PDFSimulator(biso=1.0, delta2=2.0).simulate(nio)
    first = (plain.x > 1.9) & (plain.x < 2.3)
    far = (plain.x > 8.0) & (plain.x < 9.9)
    assert sharp.y[first].max() > 1.05 * plain.y[first].max()
    # the 1/r² term fades with distance
    assert np.max(np.abs(sharp.y[far] - plain.y[far])) < 0.5 * np.max(np.abs(sharp.y[first] - plain.y[first]))


def test_new_settings_leave_earlier_settings_keys_alone():
    """Campaigns stored before radiation/delta/per-element Biso existed keep their evaluation keys."""
    sim = PDFSimulator()
    assert set(sim.settings_dict()) == {
        "technique",
        "rmin",
        "rmax",
        "rstep",
        "qmin",
        "qmax",
        "qdamp",
        "qbroad",
        "biso",
        "engine",
    }
    if sim.resolved_engine == "pdffit2":
        assert sim.settings_key() == "4ba9429d5c06"  # the key of PDFSimulator() before these settings
    assert PDFSimulator(radiation="neutron").settings_key() != sim.settings_key()
    assert PDFSimulator(delta2=1.0).settings_key() != sim.settings_key()


def test_with_settings_reuses_the_engine_and_equals_a_fresh_simulator(nio):
    sim = PDFSimulator()
    sim.simulate(nio)
    other = sim.with_settings(qdamp=0.04, biso={"Ni": 0.4, "O": 0.7})
    assert other._calculator is sim._calculator
    fresh = PDFSimulator(qdamp=0.04, biso={"Ni": 0.4, "O": 0.7})
    assert np.array_equal(other.simulate(nio).y, fresh.simulate(nio).y)
    assert np.array_equal(sim.simulate(nio).y, PDFSimulator().simulate(nio).y)  # the original is unchanged
