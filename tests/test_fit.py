"""Nuisance fits per evaluation: recovered values, the objective they leave, goodness, bad declarations.

PDF fits run pdffit2 (milliseconds per call on the 12-atom cells); the EXAFS and XANES fits work on
analytic spectra (no FEFF run), which is all the fitters see of a simulation.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from aso_workflows.errors import InputError
from aso_workflows.spectra.exafs import EXAFSSimulator
from aso_workflows.spectra.fit import FitSpec, make_fitter
from aso_workflows.spectra.goodness import r_factor, rw
from aso_workflows.spectra.mismatch import Objective, TechniqueTerm
from aso_workflows.spectra.pdf import PDFSimulator, biso_to_uiso
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.spectra.xafs import ETOK
from aso_workflows.spectra.xanes import XANESSimulator


def _displaced(structure, amplitude: float, seed: int):
    """``structure`` with every atom moved by ``amplitude`` Å in a seeded random direction."""
    rng = np.random.default_rng(seed)
    out = structure.copy()
    for i in range(len(out)):
        v = rng.normal(size=3)
        out.translate_sites([i], amplitude * v / np.linalg.norm(v), frac_coords=False)
    return out


def _scaled(spectrum: Spectrum, factor: float) -> Spectrum:
    return spectrum.model_copy(update={"values": (factor * spectrum.y).tolist()})


# ---- PDF -----------------------------------------------------------------------------------------------
def test_scale_and_qdamp_of_a_scaled_broadened_target_are_recovered_and_the_objective_is_unchanged(linio2):
    """Target: G(r) of the true structure ×0.7 with Qdamp 0.05; the campaign's simulator has Qdamp 0.02."""
    truth = PDFSimulator(qdamp=0.05)
    plain_target = truth.simulate(linio2)
    target = _scaled(plain_target, 0.7)
    sim = PDFSimulator(qdamp=0.02)
    fitter = make_fitter("pdf", ["scale", "qdamp"], target, sim)

    result = fitter.fit(sim.simulate(linio2), linio2)
    assert result.parameters["scale"] == pytest.approx(0.7, rel=0.02)
    assert result.parameters["qdamp"] == pytest.approx(0.05, rel=0.02)
    assert result.goodness < 1e-6 and result.goodness_name == "Rw"
    assert result.n_simulations > 0 and result.status == "converged"

    # The structure objective: with the fit, the scaled and broadened target scores candidates as the
    # plain target does with the right settings — zero for the true structure, the same ranking for
    # the others — while without it the scale alone dominates.
    fitted = Objective([TechniqueTerm("pdf", target, fitter=fitter)])
    reference = Objective([TechniqueTerm("pdf", plain_target)])
    unfitted = Objective([TechniqueTerm("pdf", target)])
    candidates = [linio2] + [_displaced(linio2, a, seed) for seed, a in enumerate((0.03, 0.08, 0.15, 0.25))]
    with_fit = [fitted.evaluate_fitted({"pdf": sim.simulate(c)}, c)[0] for c in candidates]
    ref = [reference.evaluate({"pdf": truth.simulate(c)})[0] for c in candidates]
    assert with_fit[0] < 1e-12 and ref[0] == 0.0
    assert np.argsort(with_fit).tolist() == np.argsort(ref).tolist() == [0, 1, 2, 3, 4]
    assert unfitted.evaluate({"pdf": sim.simulate(linio2)})[0] > 0.05  # scale 1 vs 0.7: far off


def test_per_element_uiso_and_delta2_are_refined_within_bounds(nio):
    truth = PDFSimulator(biso={"Ni": 0.4, "O": 0.9}, delta2=1.5)
    target = _scaled(truth.simulate(nio), 1.3)
    sim = PDFSimulator(biso=0.6)
    fitter = make_fitter(
        "pdf", {"refine": ["scale", "uiso", "delta2"], "bounds": {"delta2": [0, 3]}}, target, sim
    )
    result = fitter.fit(sim.simulate(nio), nio)
    p = result.parameters
    assert set(p) == {"scale", "uiso_Ni", "uiso_O", "delta2"}
    assert p["scale"] == pytest.approx(1.3, rel=0.01)
    assert p["uiso_Ni"] == pytest.approx(biso_to_uiso(0.4), rel=0.03)
    assert p["uiso_O"] == pytest.approx(biso_to_uiso(0.9), rel=0.03)
    assert 0 <= p["delta2"] <= 3 and p["delta2"] == pytest.approx(1.5, rel=0.05)
    # the fitted spectrum is what the parameters give
    again = PDFSimulator(biso={"Ni": 0.4, "O": 0.9}, delta2=p["delta2"]).simulate(nio).y * p["scale"]
    assert np.max(np.abs(result.spectrum.y - again)) < 0.02 * np.ptp(target.y)
    assert result.spectrum.extra["nuisance_fit"] == p
    # one element only: the other keeps its setting
    only_o = make_fitter("pdf", ["scale", "biso_O"], target, sim).fit(sim.simulate(nio), nio).parameters
    assert set(only_o) == {"scale", "biso_O"} and only_o["biso_O"] > 0.6


def test_per_atom_rows_are_fitted_with_the_spectrum(nio):
    """The node-level PDF surrogate learns per-atom rows: after the fit their mean is the fitted G(r)."""
    from aso_workflows.spectra.pdf_partials import simulate_with_sites

    sim = PDFSimulator(qdamp=0.02)
    target = _scaled(PDFSimulator(qdamp=0.05).simulate(nio), 0.7)
    spec = simulate_with_sites(sim, nio)
    for refine in (["scale"], ["scale", "qdamp"]):
        result = make_fitter("pdf", refine, target, sim).fit(spec, nio)
        rows = np.asarray(result.spectrum.site_values)
        assert rows.shape == (len(nio), len(target.values))
        assert np.allclose(rows.mean(axis=0), result.spectrum.y, atol=1e-6 * np.abs(result.spectrum.y).max())
    assert not np.allclose(rows, 0.7 * np.asarray(spec.site_values), atol=1e-3)  # re-computed, not scaled


def test_a_parameter_stays_inside_its_bounds(nio):
    target = PDFSimulator(qdamp=0.08).simulate(nio)
    sim = PDFSimulator(qdamp=0.0)
    fitter = make_fitter("pdf", {"refine": ["qdamp"], "bounds": {"qdamp": [0.0, 0.03]}}, target, sim)
    q = fitter.fit(sim.simulate(nio), nio).parameters["qdamp"]
    assert 0.0 <= q <= 0.03 and q == pytest.approx(0.03, abs=1e-4)  # pressed against its bound


def test_scale_alone_is_closed_form_and_needs_no_structure(nio):
    sim = PDFSimulator()
    spec = sim.simulate(nio)
    target = _scaled(spec, 0.42)
    result = make_fitter("pdf", ["scale"], target, sim).fit(spec)  # no structure: nothing re-simulated
    assert result.parameters == {"scale": pytest.approx(0.42, rel=1e-9)}
    assert result.n_simulations == 0
    with pytest.raises(InputError, match="structure"):
        make_fitter("pdf", ["scale", "qdamp"], target, sim).fit(spec)


def test_dg_weights_give_pdfguis_weighted_rw(nio):
    sim = PDFSimulator()
    spec = sim.simulate(nio)
    rng = np.random.default_rng(1)
    dy = 0.05 + 0.1 * rng.random(len(spec.values))
    target = spec.model_copy(update={"values": (0.9 * spec.y + 0.01).tolist(), "extra": {"dy": dy.tolist()}})
    result = make_fitter("pdf", {"refine": ["scale"], "weights": "dG"}, target, sim).fit(spec)
    w = 1 / dy**2
    s = np.sum(w * spec.y * target.y) / np.sum(w * spec.y**2)  # weighted least-squares scale
    assert result.parameters["scale"] == pytest.approx(s, rel=1e-9)
    assert result.goodness == pytest.approx(rw(target.y, s * spec.y, w), rel=1e-9)
    assert result.goodness != pytest.approx(rw(target.y, s * spec.y), rel=1e-3)  # the weights matter
    with pytest.raises(InputError, match="dG"):
        make_fitter("pdf", {"refine": ["scale"], "weights": "dG"}, spec, sim)  # no uncertainties


# ---- EXAFS (analytic χ(k): what FEFF's chi.dat holds) ------------------------------------------------
def _chi(k: np.ndarray, shells=((2.0, 6.0, 0.003), (2.9, 12.0, 0.006))) -> np.ndarray:
    out = np.zeros_like(k)
    kk = np.maximum(k, 0.05)
    for r, n, s2 in shells:
        out += n * np.sin(2 * kk * r + 0.4) * np.exp(-2 * kk**2 * s2) / (kk * r**2) * 0.3
    return out


def _exafs_spectrum(sim: EXAFSSimulator, e0: float = 0.0, s02: float = 1.0) -> Spectrum:
    k = sim.k()
    kf = np.round(np.arange(0.0, sim.kmax + 1.0 + 1e-9, 0.05), 10)
    chi_sites = [_chi(kf), _chi(kf, ((2.05, 6.0, 0.004),))]
    q = np.sqrt(np.clip(k**2 - e0 * ETOK, 0, None))
    sites = [s02 * np.interp(q, kf, c) * k**sim.kweight for c in chi_sites]
    values = np.mean(sites, axis=0)
    return Spectrum(
        technique="exafs",
        grid=sim.grid(),
        values=values.tolist(),
        absorber="Ni",
        absorber_sites=[0, 1],
        site_values=[s.tolist() for s in sites],
        extra={
            "feff_k": kf.tolist(),
            "feff_chi": np.mean(chi_sites, axis=0).tolist(),
            "feff_chi_sites": chi_sites,
        },
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"window": "kaiser", "dk": 2.0, "kmin": 4.0, "kmax": 11.0},
        {"space": "r", "rmin": 1.0, "rmax": 3.2},
    ],
)
def test_s02_and_e0_are_recovered(options):
    sim = EXAFSSimulator(absorber="Ni")
    target = _exafs_spectrum(sim, e0=4.0, s02=0.8)
    simulated = _exafs_spectrum(sim)
    fitter = make_fitter("exafs", {"refine": ["s02", "e0"], **options}, target, sim)
    result = fitter.fit(simulated)
    assert result.parameters["s02"] == pytest.approx(0.8, rel=0.01)
    assert result.parameters["e0"] == pytest.approx(4.0, abs=0.05)
    assert result.goodness_name == "R" and result.goodness < 1e-4
    # per-site spectra are shifted and scaled alike (the surrogate learns them)
    assert result.spectrum.site_values is not None and target.site_values is not None
    assert np.allclose(np.mean(result.spectrum.site_values, axis=0), result.spectrum.y, atol=1e-12)
    assert np.allclose(result.spectrum.site_values, target.site_values, atol=2e-3 * np.ptp(target.y))
    assert len(result.spectrum.extra["chir_mag"]) == len(result.spectrum.extra["r"])
    # without the fit the same pair scores far worse
    plain = make_fitter("exafs", {k: v for k, v in options.items()}, target, sim).fit(simulated)
    assert plain.goodness > 50 * result.goodness


def test_r_space_goodness_is_feffits_r_factor():
    from aso_workflows.spectra.xafs import xftf

    sim = EXAFSSimulator(absorber="Ni")
    target, simulated = _exafs_spectrum(sim, e0=2.0), _exafs_spectrum(sim)
    result = make_fitter("exafs", {"space": "r", "rmin": 1.2, "rmax": 3.0}, target, sim).fit(simulated)
    k = sim.k()
    kw: dict[str, Any] = dict(kmin=3.5, kmax=11.5, dk=1.0, window="hanning", kstep=0.05)
    r, cd = xftf(k, target.y, 4.0, **kw)
    _, cm = xftf(k, simulated.y, 4.0, **kw)
    sel = (r >= 1.2 - 1e-9) & (r <= 3.0 + 1e-9)
    expected = np.sum(np.abs(cd[sel] - cm[sel]) ** 2) / np.sum(np.abs(cd[sel]) ** 2)
    assert result.goodness == pytest.approx(expected, rel=1e-9)
    assert result.goodness == pytest.approx(r_factor(cd[sel], cm[sel]), rel=1e-12)


def test_e0_bounds_are_narrowed_to_the_simulated_range():
    sim = EXAFSSimulator(absorber="Ni")
    target, simulated = _exafs_spectrum(sim, e0=3.0), _exafs_spectrum(sim)
    # the same spectra without FEFF's full-range χ: only the grid 3–12 Å⁻¹ is there to shift
    for s in (target, simulated):
        for key in ("feff_k", "feff_chi", "feff_chi_sites"):
            s.extra.pop(key)
    fitter = make_fitter("exafs", {"refine": ["s02", "e0"], "kmin": 4.0, "kmax": 10.5}, target, sim)
    assert fitter.fit(simulated).parameters["e0"] == pytest.approx(3.0, abs=0.1)
    # the default window reaches the grid's ends: a shift to lower k can use only 3.0 → 3.05 Å⁻¹
    e0 = make_fitter("exafs", ["s02", "e0"], target, sim).fit(simulated).parameters["e0"]
    assert e0 <= (3.05**2 - 3.0**2) / ETOK + 1e-9
    with pytest.raises(InputError, match="no room for an E0 shift"):
        make_fitter("exafs", {"refine": ["e0"], "dk": 0.0, "kmin": 3.0, "kmax": 12.0}, target, sim).fit(
            simulated
        )


# ---- XANES ----------------------------------------------------------------------------------------------
def _mu(e: np.ndarray) -> np.ndarray:
    return (
        0.5
        + np.arctan(e / 2.0) / math.pi
        + 0.08 * np.sin(e / 6.0) * np.exp(-np.clip(e, 0, None) / 60) * (e > 0)
    )


def test_energy_shift_and_edge_step_amplitude_are_recovered():
    sim = XANESSimulator(absorber="Ni")
    e = sim.e()
    simulated = Spectrum(
        technique="xanes",
        grid=sim.grid(),
        values=_mu(e).tolist(),
        absorber="Ni",
        site_values=[_mu(e).tolist(), _mu(e).tolist()],
        absorber_sites=[0, 1],
    )
    target = Spectrum(technique="xanes", grid=sim.grid(), values=(0.9 * _mu(e - 3.0)).tolist())
    result = make_fitter("xanes", ["amplitude", "shift"], target, sim).fit(simulated)
    assert result.parameters["amplitude"] == pytest.approx(0.9, rel=0.01)
    assert result.parameters["shift"] == pytest.approx(3.0, abs=0.05)
    w = (e >= -90) & (e <= 80)  # the grid less the ±20 eV shift bounds
    assert np.allclose(result.spectrum.y[w], target.y[w], atol=1e-3)
    assert result.goodness < 1e-6
    assert result.spectrum.site_values is not None
    assert np.allclose(result.spectrum.site_values[0], result.spectrum.y)


# ---- declarations ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("technique", "spec", "field", "words"),
    [
        ("pdf", ["scale", "s02"], "fit.refine", "s02"),
        ("pdf", {"refine": ["scale"], "kmin": 3.0}, "fit", "kmin"),
        ("pdf", {"refine": ["scale"], "bounds": {"qdamp": [0, 0.1]}}, "fit.bounds", "qdamp"),
        ("pdf", ["biso", "uiso"], "fit.refine", "both"),
        ("pdf", ["scale", "scale"], "fit.refine", "more than once"),
        ("pdf", ["biso.Ni"], "fit.refine", "biso_Ni"),
        ("pdf", {"refine": ["qdamp"], "bounds": {"qdamp": [0.1, 0.0]}}, "fit.bounds", "low < high"),
        ("pdf", {"refine": ["scale"], "weights": "sigma"}, "fit.weights", "uniform"),
        ("exafs", {"refine": ["s02"], "kmin": 1.0}, "fit.kmin", "beyond the grid"),
        ("exafs", {"refine": ["scale"]}, "fit.refine", "s02"),
        ("xanes", {"refine": ["shift"], "emin": -105.0}, "fit.emin", "shift bounds"),
        ("xanes", {"refine": ["shift"], "space": "r"}, "fit", "space"),
    ],
)
def test_bad_fit_declarations_are_one_line_errors(technique, spec, field, words):
    sim = {
        "pdf": PDFSimulator(),
        "exafs": EXAFSSimulator(absorber="Ni"),
        "xanes": XANESSimulator(absorber="Ni"),
    }[technique]
    target = Spectrum(
        technique=technique, grid=sim.grid(), values=np.linspace(1, 2, len(sim.grid().values)).tolist()
    )
    with pytest.raises(InputError) as err:
        make_fitter(technique, spec, target, sim)
    assert err.value.source == field, str(err.value)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_short_and_long_forms_are_the_same_spec():
    assert FitSpec.model_validate(["scale", "qdamp"]) == FitSpec.model_validate(
        {"refine": ["scale", "qdamp"]}
    )
    assert FitSpec.model_validate(None).refine == []


def test_rw_and_r_factor_definitions():
    obs = np.array([1.0, -2.0, 3.0, 0.5])
    calc = np.array([1.1, -1.8, 2.7, 0.5])
    assert rw(obs, obs) == 0.0
    assert rw(obs, calc) == pytest.approx(math.sqrt((0.01 + 0.04 + 0.09) / (1 + 4 + 9 + 0.25)))
    w = np.array([1.0, 0.0, 1.0, 1.0])
    assert rw(obs, calc, w) == pytest.approx(math.sqrt((0.01 + 0.09) / (1 + 9 + 0.25)))
    assert r_factor(obs, calc) == pytest.approx((0.01 + 0.04 + 0.09) / (1 + 4 + 9 + 0.25))
    assert r_factor(np.array([1 + 1j]), np.array([1.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        rw(np.zeros(3), np.ones(3))


def test_cell_expansion_is_recovered_and_can_be_held_for_a_joint_fit(nio):
    """``expansion`` (α: lengths × (1 + α)) is the cell parameter a joint PDF + EXAFS campaign shares."""
    from aso_workflows.spectra.fit.pdf import expanded

    sim = PDFSimulator(qdamp=0.03)
    target = _scaled(sim.simulate(expanded(nio, 0.012)), 0.8)
    fitter = make_fitter("pdf", ["scale", "expansion"], target, sim)
    result = fitter.fit(sim.simulate(nio), nio)
    assert result.parameters["expansion"] == pytest.approx(0.012, abs=1e-5)
    assert result.parameters["scale"] == pytest.approx(0.8, rel=1e-4)
    assert result.goodness < 1e-4
    held = fitter.fit(sim.simulate(nio), nio, fixed={"expansion": 0.0})
    assert "expansion" not in held.parameters and held.goodness > 0.03  # the wrong cell shows
    with pytest.raises(InputError, match="cannot take"):
        fitter.fit(sim.simulate(nio), nio, fixed={"qdamp": 0.02})


def _wurtzite():
    from pymatgen.core import Lattice, Structure

    frac = [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.375], [2 / 3, 1 / 3, 0.875]]
    return Structure(Lattice.hexagonal(4.3, 7.01), ["Cd", "Cd", "Se", "Se"], frac)


def test_pdfguis_cell_and_site_adps_are_refined_with_symmetry_ties_and_uncertainties():
    """CdSe (P6₃mc): a = b tied, c free, one Uiso per site; every value has a covariance uncertainty."""
    start = _wurtzite()
    truth = start.copy()
    truth.lattice = truth.lattice.__class__.hexagonal(4.33, 7.05)
    sim = PDFSimulator(rmin=1.5, rmax=8.0, qmax=20.0, qdamp=0.04, biso=1.0)
    target = _scaled(sim.with_settings(biso={"Cd": 0.8, "Se": 1.3}).simulate(truth), 0.6)
    spec = {"refine": ["scale", "abc", "uiso_site"], "symmetry": "start"}
    fitter = make_fitter("pdf", spec, target, sim, reference=start)
    result = fitter.fit(sim.simulate(start), start)
    p, u = result.parameters, result.uncertainties
    assert set(p) == {"scale", "a", "c", "uiso(Cd1)", "uiso(Se1)"}  # no b: tied to a by the symmetry
    assert p["a"] == pytest.approx(4.33, abs=1e-4) and p["c"] == pytest.approx(7.05, abs=1e-4)
    assert p["uiso(Cd1)"] == pytest.approx(biso_to_uiso(0.8), rel=1e-3)
    assert p["scale"] == pytest.approx(0.6, rel=1e-4) and result.goodness < 1e-4
    assert set(u) == set(p) and all(v >= 0 for v in u.values())
    assert result.bounds["a"] == pytest.approx([0.9 * 4.3, 1.1 * 4.3])
    refined = result.structure
    assert refined is not None and refined.to_pymatgen().lattice.a == pytest.approx(4.33, abs=1e-4)


def test_anisotropic_adps_and_the_nanoparticle_diameter():
    """Uij of a site as its symmetry allows (U11 = U22, U33 in a hexagonal cell) and pdffit2's spdiameter."""
    from aso_workflows.spectra.pdf import ADP_PROPERTY

    start = _wurtzite()
    aniso = start.copy()
    u11, u33 = 0.012, 0.025
    aniso.add_site_property(ADP_PROPERTY, [[u11, u11, u33, u11 / 2, 0.0, 0.0]] * 4)
    sim = PDFSimulator(rmin=1.5, rmax=8.0, qmax=20.0, qdamp=0.04, biso=1.0)
    target = sim.with_settings(spdiameter=25.0).simulate(aniso)
    spec = {"refine": ["uaniso", "spdiameter"], "symmetry": "start"}
    result = make_fitter("pdf", spec, target, sim, reference=start).fit(sim.simulate(start), start)
    p = result.parameters
    assert set(p) == {"u11(Cd1)", "u33(Cd1)", "u11(Se1)", "u33(Se1)", "spdiameter"}
    assert p["u11(Cd1)"] == pytest.approx(u11, rel=1e-3) and p["u33(Se1)"] == pytest.approx(u33, rel=1e-3)
    assert p["spdiameter"] == pytest.approx(25.0, rel=1e-3)


def test_a_bad_cell_or_adp_declaration_is_one_line():
    sim = PDFSimulator()
    target = sim.simulate(_wurtzite())
    with pytest.raises(InputError, match="more than one of expansion, abc, lattice"):
        make_fitter("pdf", ["abc", "expansion"], target, sim)
    with pytest.raises(InputError, match="mixes ADP models"):
        make_fitter("pdf", ["uiso", "uaniso"], target, sim)
