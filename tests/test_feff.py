"""FEFF EXAFS/XANES simulators: real FEFF 10 runs (feff10-rs) with small clusters and path limits.

About ten FEFF runs of 1–8 s each; the physics checks use LiNiO2 (Ni–O 1.970 Å, Ni K edge 8333 eV).
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aso_workflows.errors import InputError, SimulationError
from aso_workflows.spectra.exafs import EXAFSSimulator, k_grid
from aso_workflows.spectra.feff_absorber import ABSORBER_FILE, ABSORBER_RESULT, supercell_site_map
from aso_workflows.spectra.feff_engine import ExternalFeffEngine, Feff10RsEngine, make_engine
from aso_workflows.spectra.xafs import chir_magnitude, normalize_xmu
from aso_workflows.spectra.xanes import XANESSimulator, xanes_energy_grid

# Small but physical: single and double scattering within 4.5 Å, no SCF (a few seconds per absorber).
SMALL_EXAFS: dict[str, Any] = {"radius": 5.0, "rpath": 4.5, "nlegs": 3}
TINY_EXAFS: dict[str, Any] = {"radius": 4.0, "rpath": 3.0, "nlegs": 2}
SMALL_XANES: dict[str, Any] = {"radius": 4.0, "fms": 3.0, "scf": None}


def first_shell_peak(spectrum, lo: float = 1.0, hi: float = 2.1) -> float:
    """R of the |χ(R)| maximum in [lo, hi] Å, refined by a parabola through the top three points."""
    r = np.asarray(spectrum.extra["r"])
    m = np.asarray(spectrum.extra["chir_mag"])
    idx = np.flatnonzero((r >= lo) & (r <= hi))
    i = idx[np.argmax(m[idx])]
    y0, y1, y2 = m[i - 1], m[i], m[i + 1]
    shift = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    return float(r[i] + shift * (r[1] - r[0]))


@pytest.fixture(scope="module")
def linio2_exafs(tmp_path_factory):
    """EXAFS of Ni site 3 of LiNiO2 (and its directory)."""
    from aso_workflows.structures import load_structure

    s = load_structure(Path(__file__).resolve().parents[1] / "aso_workflows" / "data" / "LiNiO2.cif")
    work = tmp_path_factory.mktemp("exafs")
    sim = EXAFSSimulator(absorber="Ni", sites=[3], **SMALL_EXAFS)
    return sim, sim.simulate(s, workdir=work), work


# ---- grids and transforms (no FEFF) -------------------------------------------------------------------
def test_reference_grids():
    k = k_grid(3.0, 12.0, 0.05)
    assert len(k) == 181 and k[0] == 3.0 and k[-1] == 12.0
    e = xanes_energy_grid(((-110, -20, 2), (-20, 30, 0.5), (30, 100, 1)))
    assert len(e) == 216 and e[0] == -110 and e[-1] == 100
    assert np.all(np.diff(e) > 0)
    assert len(XANESSimulator(absorber="Ni").grid().values) == 216


def test_chir_peak_of_a_single_shell_is_at_its_distance():
    # χ(k) = sin(2kR) for R = 2.5 Å: |χ(R)| peaks at 2.5 Å (no phase shift in this synthetic χ)
    k = k_grid(3.0, 12.0, 0.05)
    r, mag = chir_magnitude(k, np.sin(2 * k * 2.5), rmax=6.0)
    assert r[-1] <= 6.0 and abs(r[np.argmax(mag)] - 2.5) < 0.05


def test_normalize_xmu_gives_unit_edge_step():
    e = np.linspace(-10, 120, 400)
    mu = 3.0 * (0.5 + np.arctan(e / 0.8) / np.pi) * (1 + 0.001 * e)  # step 3, sloped post-edge
    flat, step = normalize_xmu(e, mu, (30.0, 100.0))
    assert step == pytest.approx(3.0, rel=0.02)
    assert flat[(e > 30) & (e < 100)].mean() == pytest.approx(1.0, abs=1e-3)


def test_supercell_site_map_points_at_the_same_atom(linio2):
    sc = linio2 * (2, 2, 2)
    m = supercell_site_map(linio2, sc)
    for i, j in enumerate(m):
        assert sc[j].specie == linio2[i].specie
        assert np.allclose(sc[j].coords, linio2[i].coords, atol=1e-6)


# ---- settings and sites ---------------------------------------------------------------------------------
def test_sites_all_subset_and_list_are_input_indices(linio2):
    ni = [i for i, s in enumerate(linio2) if s.specie.symbol == "Ni"]
    assert EXAFSSimulator(absorber="Ni").absorber_sites(linio2) == ni
    sub = EXAFSSimulator(absorber="Ni", sites=2, seed=7).absorber_sites(linio2)
    assert len(sub) == 2 and set(sub) <= set(ni)
    assert sub == EXAFSSimulator(absorber="Ni", sites=2, seed=7).absorber_sites(linio2)  # seeded
    assert EXAFSSimulator(absorber="Ni", sites=[ni[1]]).absorber_sites(linio2) == [ni[1]]
    with pytest.raises(InputError, match="^sites:"):
        EXAFSSimulator(absorber="Ni", sites=[0]).absorber_sites(linio2)  # site 0 is Li
    with pytest.raises(InputError, match="^sites:"):
        EXAFSSimulator(absorber="Ni", sites=4).absorber_sites(linio2)  # only 3 Ni


def test_missing_absorber_element_is_a_one_line_input_error(diamond, tmp_path):
    sim = EXAFSSimulator(absorber="Ni")
    with pytest.raises(InputError) as exc:
        sim.simulate(diamond, workdir=tmp_path)
    assert exc.value.source == "absorber" and "\n" not in str(exc.value)
    assert "Ni" in str(exc.value) and "C" in str(exc.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("absorber", "Xx"),
        ("edge", "Q"),
        ("sites", "some"),
        ("sites", 0),
        ("supercell", [2, 2]),
        ("kmax", 2.0),
        ("kmax", 25.0),
        ("kstep", 10.0),
        ("nlegs", 1),
        ("debye", [300, 0]),
        ("engine", ""),
    ],
)
def test_bad_settings_name_the_field(field, value):
    from pydantic import ValidationError

    from aso_workflows.spectra.registry import make_simulator

    settings = {"absorber": "Ni", field: value}
    with pytest.raises(InputError) as exc:
        make_simulator("exafs", **settings)
    assert exc.value.source == field and "\n" not in str(exc.value)
    with pytest.raises(ValidationError):  # built directly: pydantic's error for the same field
        EXAFSSimulator(**settings)


def test_inputs_are_pymatgen_sets_with_our_cards(linio2, tmp_path):
    d = EXAFSSimulator(absorber="Ni", **SMALL_EXAFS).write_absorber_inputs(linio2, 4, tmp_path / "a")
    text = (d / "feff.inp").read_text()
    for card in ("RPATH 4.5", "NLEG 3", "EXAFS 13", "DEBYE 300 500"):
        assert card in text
    assert "\nSCF" not in text  # no SCF by default for EXAFS
    meta = json.loads((d / ABSORBER_FILE).read_text())
    assert meta["site"] == 4
    x = XANESSimulator(absorber="Ni", **SMALL_XANES).write_absorber_inputs(linio2, 4, tmp_path / "x")
    xt = (x / "feff.inp").read_text()
    assert "FMS 3 0" in xt and "XANES" in xt and "\nLDOS" not in xt
    ref = XANESSimulator(absorber="Ni").write_absorber_inputs(linio2, 4, tmp_path / "ref")
    assert "SCF 4.5 0 30 0.2 1" in (ref / "feff.inp").read_text()


def test_run_absorber_refuses_a_directory_written_with_other_settings(linio2, tmp_path):
    d = EXAFSSimulator(absorber="Ni", **TINY_EXAFS).write_absorber_inputs(linio2, 3, tmp_path)
    with pytest.raises(InputError, match="rpath|tags"):
        EXAFSSimulator(absorber="Ni", **{**TINY_EXAFS, "rpath": 3.5}).run_absorber(d)
    with pytest.raises(InputError, match=ABSORBER_FILE):
        EXAFSSimulator(absorber="Ni").run_absorber(tmp_path / "empty")


# ---- EXAFS physics ---------------------------------------------------------------------------------------
def test_exafs_chi_k_is_finite_on_181_points(linio2_exafs):
    sim, sp, work = linio2_exafs
    assert sp.technique == "exafs" and sp.grid.name == "k" and len(sp.values) == 181
    assert np.all(np.isfinite(sp.y)) and np.abs(sp.y).max() > 0.1
    assert sp.absorber == "Ni" and sp.edge == "K" and sp.absorber_sites == [3]
    assert sp.engine.startswith("feff10-rs ")
    assert len(sp.extra["r"]) == len(sp.extra["chir_mag"]) and sp.extra["r"][-1] <= sim.rmax_ft
    # Ni–O at 1.97 Å shows up ~0.4 Å lower (scattering phase shift)
    assert 1.3 < first_shell_peak(sp) < 1.8
    site_dir = work / "site_0003"
    assert (site_dir / ABSORBER_RESULT).is_file() and not list(site_dir.glob("*.bin"))
    # FEFF's own χ(k) from k = 0 to kmax + 1 Å⁻¹ is kept (room for a fitted E0 shift)
    kf, chi = np.asarray(sp.extra["feff_k"]), np.asarray(sp.extra["feff_chi"])
    assert kf[0] == 0.0 and kf[-1] == pytest.approx(sim.kmax + 1.0)
    assert np.allclose(np.interp(sim.k(), kf, chi) * sim.k() ** sim.kweight, sp.y, atol=1e-9)


def test_expanding_the_lattice_moves_the_first_shell_outward(linio2, linio2_exafs, tmp_path):
    sim, base, _ = linio2_exafs
    big = linio2.copy()
    big.scale_lattice(linio2.volume * 1.04**3)  # every distance × 1.04: Ni–O 1.970 → 2.049 Å
    expanded = sim.simulate(big, workdir=tmp_path)
    shift = first_shell_peak(expanded) - first_shell_peak(base)
    # Less than the 0.079 Å bond change (measured 0.045 Å): the scattering phases change with the
    # expanded potentials, and the Ni–Ni/Li peak at ~2.5 Å overlaps the first shell's tail.
    assert 0.02 < shift < 0.13


def test_site_subset_runs_each_absorber_and_averages(linio2, tmp_path):
    sim = EXAFSSimulator(absorber="Ni", sites=2, seed=3, **TINY_EXAFS)
    sites = sim.absorber_sites(linio2)
    sp = sim.simulate(linio2, workdir=tmp_path)
    assert sp.absorber_sites == sites
    assert sp.site_values is not None and np.asarray(sp.site_values).shape == (2, 181)
    assert np.allclose(sp.y, np.mean(sp.site_values, axis=0))
    assert np.asarray(sp.extra["feff_chi_sites"]).shape[0] == 2
    assert np.allclose(sp.extra["feff_chi"], np.mean(sp.extra["feff_chi_sites"], axis=0))
    # the three Ni of LiNiO2 are equivalent: both sites give the same χ(k)
    assert np.allclose(sp.site_values[0], sp.site_values[1], atol=1e-3 * np.abs(sp.y).max())
    for s in sites:
        assert json.loads((tmp_path / f"site_{s:04d}" / ABSORBER_FILE).read_text())["site"] == s


# ---- XANES physics ---------------------------------------------------------------------------------------
def test_xanes_is_at_the_ni_k_edge_and_normalised(linio2, tmp_path):
    sim = XANESSimulator(absorber="Ni", sites=[4], **SMALL_XANES)
    sp = sim.simulate(linio2, workdir=tmp_path)
    assert sp.technique == "xanes" and sp.grid.name == "e" and sp.grid.unit == "eV"
    assert sp.grid.values == sim.grid().values and len(sp.values) == 216
    assert abs(sp.extra["e0"] - 8333.0) < 15.0
    e, mu = sp.x, sp.y
    assert np.all(np.isfinite(mu))
    assert mu[(e >= 30) & (e <= 100)].mean() == pytest.approx(1.0, abs=0.05)  # edge step 1
    assert mu[e <= -20].max() < 0.05  # below the edge
    assert mu[(e > -5) & (e < 15)].max() > 1.0  # white line
    assert sp.absorber_sites == [4] and sp.engine.startswith("feff10-rs")
    # FEFF scales μ by the atomic cross-section 50 eV above the edge: our edge step must be ≈ 1 too
    site = json.loads((tmp_path / "site_0004" / ABSORBER_RESULT).read_text())
    assert 0.7 < site["extra"]["edge_step"] < 1.3


# ---- engines and failures ----------------------------------------------------------------------------------
def test_engine_names_resolve():
    assert isinstance(make_engine("feff10-rs"), Feff10RsEngine)
    assert isinstance(make_engine("/opt/feff/bin/feff8l"), ExternalFeffEngine)


def test_external_engine_with_a_missing_executable_is_one_line(linio2, tmp_path):
    with pytest.raises(InputError) as exc:
        ExternalFeffEngine("/nonexistent/bin/feff8l").run(tmp_path)
    assert exc.value.source == "engine" and "/nonexistent/bin/feff8l" in str(exc.value)
    assert "\n" not in str(exc.value)
    sim = EXAFSSimulator(absorber="Ni", engine="/nonexistent/bin/feff8l", **TINY_EXAFS)
    d = sim.write_absorber_inputs(linio2, 3, tmp_path / "a")
    with pytest.raises(InputError, match="^engine:"):
        sim.run_absorber(d)


def test_external_engine_runs_a_feff_executable(linio2, tmp_path):
    # A real FEFF 10 behind an executable, as a cluster build would be: feff10-rs started by a script
    exe = tmp_path / "feff10"
    exe.write_text(f"#!{sys.executable}\nimport feff10\nfeff10.run('feff.inp', '.')\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    ref = EXAFSSimulator(absorber="Ni", sites=[3], **TINY_EXAFS)
    ext = EXAFSSimulator(absorber="Ni", sites=[3], engine=str(exe), **TINY_EXAFS)
    a = ref.run_absorber(ref.write_absorber_inputs(linio2, 3, tmp_path / "ref"))
    b = ext.run_absorber(ext.write_absorber_inputs(linio2, 3, tmp_path / "ext"))
    assert b.engine == f"external FEFF {exe}"
    assert np.allclose(a.values, b.values)
    assert (tmp_path / "ext" / "feff.log").read_text().strip()  # FEFF's output went to the log


def test_broken_feff_inp_is_a_simulation_error_naming_site_and_directory(linio2, tmp_path):
    sim = EXAFSSimulator(absorber="Ni", **TINY_EXAFS)
    d = sim.write_absorber_inputs(linio2, 5, tmp_path / "site")
    inp = d / "feff.inp"
    # a second absorbing atom (potential 0) in ATOMS: FEFF's rdinp refuses it
    lines = inp.read_text().splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.strip().startswith("ATOMS")) + 4
    parts = lines[i].split()
    parts[3] = "0"
    lines[i] = "  ".join(parts)
    inp.write_text("\n".join(lines) + "\n")
    with pytest.raises(SimulationError) as exc:
        sim.run_absorber(d)
    msg = str(exc.value)
    assert "\n" not in msg and "site 5" in msg and str(d.resolve()) in msg
    assert "absorbing atom" in msg  # FEFF's own reason, from its log
    inp.write_text("this is not a feff input\n")
    with pytest.raises(SimulationError, match="site 5.*FeffParseError"):
        sim.run_absorber(d)


def test_timeout_stops_a_run(linio2, tmp_path):
    sim = EXAFSSimulator(absorber="Ni", timeout=0.3, **TINY_EXAFS)
    d = sim.write_absorber_inputs(linio2, 3, tmp_path)
    with pytest.raises(SimulationError, match="timed out after 0.3 s"):
        sim.run_absorber(d)
