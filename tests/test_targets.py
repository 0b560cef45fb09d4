"""Reading target spectra: round trips, interpolation, FEFF files, and one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aso_workflows.errors import InputError
from aso_workflows.spectra.pdf import PDFSimulator
from aso_workflows.spectra.spectrum import Grid
from aso_workflows.spectra.targets import read_target


@pytest.fixture
def nio_pdf(nio):
    sim = PDFSimulator(biso=0.5)
    return sim, sim.simulate(nio)


def test_round_trip_of_a_simulated_pdf(tmp_path, nio_pdf):
    sim, spec = nio_pdf
    path = tmp_path / "target.gr"
    np.savetxt(path, np.column_stack([spec.x, spec.y]), header="r G(r)\nsimulated NiO", fmt="%.10g")
    back = read_target(path, "pdf", grid=sim.grid())
    assert back.grid == spec.grid
    assert np.allclose(back.y, spec.y, rtol=1e-8, atol=1e-9)
    assert back.source == str(path)
    # without a grid the file's own abscissa is kept
    own = read_target(path, "pdf")
    assert own.grid.name == "r" and np.allclose(own.x, spec.x)


def test_csv_with_header_row_and_extra_columns(tmp_path, nio_pdf):
    sim, spec = nio_pdf
    path = tmp_path / "target.csv"
    lines = ["r,G,dG"] + [f"{x:.10g},{y:.10g},0.01" for x, y in zip(spec.x, spec.y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    back = read_target(path, "pdf", grid=sim.grid())
    assert np.allclose(back.y, spec.y, atol=1e-9)


def test_columns_option_picks_x_and_y(tmp_path, nio_pdf):
    sim, spec = nio_pdf
    path = tmp_path / "three.dat"
    np.savetxt(path, np.column_stack([np.zeros_like(spec.x), spec.x, spec.y]), fmt="%.10g")
    back = read_target(path, "pdf", grid=sim.grid(), columns=[1, 2])
    assert np.allclose(back.y, spec.y, atol=1e-9)


def test_coarser_file_is_interpolated_onto_the_grid(tmp_path, nio):
    truth = PDFSimulator(rmin=0.9, rmax=10.2, biso=0.5).simulate(nio)  # 0.01 Å steps, wider than needed
    path = tmp_path / "coarse.dat"
    np.savetxt(path, np.column_stack([truth.x[::2], truth.y[::2]]), fmt="%.12g")  # 0.02 Å steps
    grid = PDFSimulator().grid()
    back = read_target(path, "pdf", grid=grid)
    assert back.grid == grid and len(back.values) == 900
    expected = np.interp(grid.array, truth.x, truth.y)
    in_file = np.isin(np.round(grid.array, 6), np.round(truth.x[::2], 6))
    assert in_file.sum() == 450
    assert np.allclose(back.y[in_file], expected[in_file], atol=1e-9)  # the file's own points: exact
    between = ~in_file  # linear interpolation: midpoints are the mean of the neighbours
    assert np.max(np.abs(back.y[between] - expected[between])) < 0.05 * np.ptp(expected)
    assert np.max(np.abs(back.y[between] - expected[between])) > 0  # really interpolated


def test_pdfgetx3_gr_with_config_header(tmp_path):
    r = np.round(np.arange(1.0, 3.0, 0.01), 10)
    g = np.sin(3 * r)
    body = "\n".join(f"{a:.4f} {b:.6f}" for a, b in zip(r, g, strict=True))
    path = tmp_path / "sample.gr"
    path.write_text(f"[DEFAULT]\nversion = 2.1\nqmax = 18\n\n#### start data\n#S 1\n#L r G\n{body}\n")
    back = read_target(path, "pdf")
    assert np.allclose(back.x, r) and np.allclose(back.y, g, atol=1e-6)


XMU_HEADER = """# Ni K edge, FEFF 10
#  POTENTIALS
# ..........
#  omega    e    k    mu    mu0     chi     @#
"""


def _write_xmu(path: Path, e0: float = 8333.0) -> tuple[np.ndarray, ...]:
    e = np.arange(-20.0, 100.0, 0.5)
    k = np.sign(e) * np.sqrt(np.abs(e) / 3.80998)
    mu = 1.0 / (1.0 + np.exp(-e / 2.0)) + 0.05 * np.sin(k)
    mu0 = 1.0 / (1.0 + np.exp(-e / 2.0))
    chi = np.where(e > 0, 0.1 * np.sin(2 * 2.0 * k) / np.maximum(k, 0.1) ** 2, 0.0)
    rows = "\n".join(
        f"{e0 + a:12.3f} {a:10.3f} {b:9.4f} {c:12.6e} {d:12.6e} {f:12.6e}"
        for a, b, c, d, f in zip(e, k, mu, mu0, chi, strict=True)
    )
    path.write_text(XMU_HEADER + rows + "\n")
    return e, k, mu, chi


def test_feff_xmu_as_xanes_relative_and_absolute(tmp_path):
    path = tmp_path / "xmu.dat"
    e, _, mu, _ = _write_xmu(path)
    rel = read_target(path, "xanes")
    assert rel.grid.name == "e" and rel.settings["format"] == "xmu"
    assert np.allclose(rel.x, e, atol=1e-3) and np.allclose(rel.y, mu, atol=1e-6)
    ab = read_target(path, "xanes", energy="absolute")
    assert ab.grid.name == "E" and np.allclose(ab.x, e + 8333.0, atol=1e-3)
    grid = Grid(name="e", unit="eV", values=np.arange(-10.0, 50.0, 0.25).tolist())
    on = read_target(path, "xanes", grid=grid)
    assert np.allclose(on.y, np.interp(grid.array, e, mu), atol=1e-5)


def test_feff_xmu_as_exafs_keeps_the_part_above_the_edge(tmp_path):
    path = tmp_path / "xmu.dat"
    _, k, _, chi = _write_xmu(path)
    spec = read_target(path, "exafs", kweight=2)
    above = k >= 0
    assert spec.x[0] >= 0
    assert np.allclose(spec.x, k[above], atol=1e-4)
    assert np.allclose(spec.y, chi[above] * k[above] ** 2, atol=1e-4)


def test_feff_chi_dat_is_k_weighted(tmp_path):
    k = np.arange(0.0, 12.05, 0.05)
    chi = 0.2 * np.sin(2 * 2.05 * k) * np.exp(-0.01 * k**2)
    path = tmp_path / "chi.dat"
    rows = "\n".join(f"{a:8.4f} {b:14.6e} {abs(b):14.6e} {0.0:14.6e}" for a, b in zip(k, chi, strict=True))
    path.write_text("# FEFF chi\n#       k          chi          mag           phase @#\n" + rows + "\n")
    w0 = read_target(path, "exafs")
    w2 = read_target(path, "exafs", kweight=2)
    assert np.allclose(w0.y, chi, atol=1e-6)
    assert np.allclose(w2.y, chi * k**2, atol=1e-4)
    grid = Grid(name="k", unit="Å^-1", values=np.arange(3.0, 12.0 + 1e-9, 0.05).tolist())
    on = read_target(path, "exafs", grid=grid, kweight=2)
    assert len(on.values) == 181


# ---- bad files: each a one-line InputError naming the file ---------------------------------------
BAD_FILES = {
    "empty.dat": ("", "no data rows"),
    "comments_only.dat": ("# r G\n# nothing\n", "no data rows"),
    "one_column.dat": ("1.0\n1.1\n1.2\n1.3\n1.4\n1.5\n", "column"),
    "text_row.dat": ("1.0 0.1\n1.1 0.2\n1.2 oops\n1.3 0.4\n1.4 0.5\n1.5 0.6\n", "line 3 is not numeric"),
    "nan.dat": ("1.0 0.1\n1.1 nan\n1.2 0.3\n1.3 0.4\n1.4 0.5\n1.5 0.6\n", "NaN"),
    "inf.dat": ("1.0 0.1\n1.1 0.2\n1.2 inf\n1.3 0.4\n1.4 0.5\n1.5 0.6\n", "infinite"),
    "unsorted.dat": ("1.0 0.1\n1.2 0.2\n1.1 0.3\n1.3 0.4\n1.4 0.5\n1.5 0.6\n", "not increasing"),
    "descending.dat": ("1.5 0.1\n1.4 0.2\n1.3 0.3\n1.2 0.4\n1.1 0.5\n1.0 0.6\n", "not increasing"),
    "duplicate.dat": ("1.0 0.1\n1.1 0.2\n1.1 0.3\n1.3 0.4\n1.4 0.5\n1.5 0.6\n", "repeats"),
    "short.dat": ("1.0 0.1\n1.1 0.2\n1.2 0.3\n", "only 3 data point"),
    "ragged.dat": ("1.0 0.1\n1.1\n1.2 0.3\n1.3 0.4\n1.4 0.5\n1.5 0.6\n", "line 2"),
    "binary.dat": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a text file"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_gives_one_line_error_naming_the_file(tmp_path, name):
    content, expected = BAD_FILES[name]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError) as err:
        read_target(path, "pdf")
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.dat"
    with pytest.raises(InputError, match="file not found") as err:
        read_target(path, "pdf")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_file_not_covering_the_grid_names_both_ranges(tmp_path, nio_pdf):
    sim, spec = nio_pdf
    path = tmp_path / "short_range.dat"
    keep = spec.x < 8.0
    np.savetxt(path, np.column_stack([spec.x[keep], spec.y[keep]]), fmt="%.10g")
    with pytest.raises(InputError) as err:
        read_target(path, "pdf", grid=sim.grid())
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "[1, 7.99]" in message and "[1, 9.99]" in message


def test_column_beyond_the_file(tmp_path):
    path = tmp_path / "two.dat"
    np.savetxt(path, np.column_stack([np.arange(10.0), np.arange(10.0)]))
    with pytest.raises(InputError, match="column 3"):
        read_target(path, "pdf", columns=(0, 3))


def test_chi_dat_cannot_be_a_pdf_target(tmp_path):
    path = tmp_path / "chi.dat"
    path.write_text("\n".join(f"{k} {k} {k} 0" for k in range(10)) + "\n")
    with pytest.raises(InputError, match="chi.dat"):
        read_target(path, "pdf")


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        (dict(colums=(0, 1)), "read_options"),
        (dict(format="jcamp"), "read_options.format"),
        (dict(energy="edge"), "read_options.energy"),
        (dict(columns=(1, 1)), "read_options.columns"),
        (dict(kweight=-1), "read_options.kweight"),
    ],
)
def test_bad_read_options_name_the_option(tmp_path, opts, field):
    path = tmp_path / "ok.dat"
    np.savetxt(path, np.column_stack([np.arange(10.0), np.arange(10.0)]))
    with pytest.raises(InputError) as err:
        read_target(path, "pdf", **opts)
    assert err.value.source == field


def test_unknown_technique(tmp_path):
    with pytest.raises(InputError, match="technique"):
        read_target(tmp_path / "x.dat", "xrd")


# ---- measured files: header hints, uncertainties, checks against the simulator --------------------------
NI_GR = Path(__file__).resolve().parents[1] / "examples" / "ni_xray_measured" / "Ni_2-8.chi.gr"


def test_pdfgetx2_file_gives_its_qmax_radiation_and_dg():
    from aso_workflows.spectra.targets import settings_with_hints, target_hints

    hints = target_hints(NI_GR)
    assert hints == {"radiation": "xray", "qmax": 40.0}  # "## S(q) ... qmax=40.000000", PDFgetX2
    settings = settings_with_hints("pdf", {"rmin": 1.5, "rmax": 20.0}, hints)
    assert settings == {"rmin": 1.5, "rmax": 20.0, "qmax": 40.0, "radiation": "xray"}
    assert settings_with_hints("pdf", {"qmax": 30.0}, hints)["qmax"] == 30.0  # the settings win
    sim = PDFSimulator(**settings)
    spec = read_target(NI_GR, "pdf", simulator=sim)
    assert spec.grid == sim.grid() and len(spec.values) == 1850
    dy = np.asarray(spec.extra["dy"])
    assert dy.shape == (1850,) and np.all(dy > 0)
    assert spec.y[np.argmin(np.abs(spec.x - 2.49))] > 5  # the Ni–Ni first peak at a/√2 = 2.49 Å
    assert spec.settings["hints"]["qmax"] == 40.0


def _pdfgetn_file(path: Path, r: np.ndarray, g: np.ndarray) -> Path:
    rows = "\n".join(f"{a:.3f} {b:.6f} 0.0 0.02" for a, b in zip(r, g, strict=True))
    path.write_text(
        "History written: today\nproduced by PDFgetN\n##### PDFgui\nstype=N  neutron scattering\nqmax=32.00\n"
        f"qdamp=0.03\n##### start data\n#L r(A) G(r) d_r d_Gr\n{rows}\n"
    )
    return path


def test_neutron_file_is_refused_for_xray_settings(tmp_path, nio):
    neutron = PDFSimulator(radiation="neutron", qmax=32.0)
    spec = neutron.simulate(nio)
    path = _pdfgetn_file(tmp_path / "nio.gr", spec.x, spec.y)
    back = read_target(path, "pdf", simulator=neutron)
    assert np.allclose(back.y, spec.y, atol=1e-6)
    assert back.settings["hints"] == {"radiation": "neutron", "qmax": 32.0, "qdamp": 0.03}
    with pytest.raises(InputError) as err:
        read_target(path, "pdf", simulator=PDFSimulator(qmax=32.0))
    msg = str(err.value)
    assert str(path) in msg and "neutron" in msg and "radiation" in msg and "\n" not in msg


def _chi_dat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    k = np.round(np.arange(0.0, 13.05, 0.05), 10)
    chi = 0.2 * np.sin(2 * 2.05 * k) * np.exp(-0.01 * k**2)
    rows = "\n".join(f"{a:8.4f} {b:14.6e} {abs(b):14.6e} {0.0:14.6e}" for a, b in zip(k, chi, strict=True))
    path.write_text("# FEFF chi\n#       k          chi          mag           phase @#\n" + rows + "\n")
    return k, chi


def test_exafs_kweight_is_brought_to_the_simulators_and_a_contradiction_is_refused(tmp_path):
    from aso_workflows.spectra.exafs import EXAFSSimulator

    sim = EXAFSSimulator(absorber="Ni", kweight=2)
    path = tmp_path / "chi.dat"
    k, chi = _chi_dat(path)
    auto = read_target(path, "exafs", simulator=sim)  # FEFF χ is unweighted: multiplied by k²
    assert auto.settings["kweight"] == 2.0 and auto.grid == sim.grid()
    assert np.allclose(auto.y, np.interp(sim.k(), k, chi) * sim.k() ** 2, atol=1e-6)
    assert np.allclose(read_target(path, "exafs", simulator=sim, kweight=2).y, auto.y)
    with pytest.raises(InputError) as err:
        read_target(path, "exafs", simulator=sim, kweight=1)
    assert "k^1" in str(err.value) and "kweight is 2" in str(err.value) and str(path) in str(err.value)
    # a plain two-column file does not say its k-weight: it must be stated
    plain = tmp_path / "k2chi.dat"
    np.savetxt(plain, np.column_stack([k[40:], chi[40:] * k[40:] ** 2]))
    with pytest.raises(InputError, match="data_kweight"):
        read_target(plain, "exafs", simulator=sim)
    stated = read_target(plain, "exafs", simulator=sim, data_kweight=2)
    assert np.allclose(stated.y, auto.y, atol=1e-5)
    with pytest.raises(InputError, match="kweight is 2"):
        read_target(plain, "exafs", simulator=sim, kweight=0)  # k^0 of a file taken as χ(k)


ATHENA_CHIK = """# Athena data file -- Athena version 0.9.26
# Saving ni_foil as chi(k)
# .  Element=Ni   Edge=K
# Background parameters
# .  E0=8333.000  Eshift=0.000  Rbkg=1.000
# .  Kweight=2.0  Edge step=1.000
#------------------------
#  k chi chik chik2 chik3 win energy
"""


def _athena_chik(path: Path, header: str = ATHENA_CHIK) -> tuple[np.ndarray, np.ndarray]:
    k = np.round(np.arange(0.0, 14.0, 0.05), 10)
    chi = 0.3 * np.sin(2 * 2.5 * k) * np.exp(-0.008 * k**2)
    rows = "\n".join(
        f"{a:8.3f} {c: .10e} {a * c: .10e} {a**2 * c: .10e} {a**3 * c: .10e} 1.0 {8333 + a * a * 3.81:.3f}"
        for a, c in zip(k, chi, strict=True)
    )
    path.write_text(header + rows + "\n")
    return k, chi


def test_athena_chik_picks_the_chi_column_and_checks_the_labelled_kweight(tmp_path):
    from aso_workflows.spectra.exafs import EXAFSSimulator

    path = tmp_path / "ni_foil.chik"
    k, chi = _athena_chik(path)
    sim = EXAFSSimulator(absorber="Ni", kweight=3)
    spec = read_target(path, "exafs", simulator=sim)
    assert spec.settings["format"] == "athena" and spec.settings["kweight"] == 3.0
    assert spec.settings["hints"]["absorber"] == "Ni" and spec.settings["hints"]["edge"] == "K"
    assert np.allclose(spec.y, np.interp(sim.k(), k, chi) * sim.k() ** 3, rtol=1e-6, atol=1e-8)
    # the chik2 column: its label says k², so k¹ more is applied
    k2 = read_target(path, "exafs", simulator=sim, columns=[0, 3])
    assert np.allclose(k2.y, spec.y, rtol=1e-6, atol=1e-8)
    with pytest.raises(InputError, match="'chik2' \\(k-weight 2\\)"):
        read_target(path, "exafs", simulator=sim, columns=[0, 3], data_kweight=0)
    with pytest.raises(InputError, match="absorber Ni"):
        read_target(path, "exafs", simulator=EXAFSSimulator(absorber="Cu"))
    with pytest.raises(InputError, match="cannot be a xanes target"):
        read_target(path, "xanes")


def _raw_mu(e: np.ndarray, e0: float = 8333.0, step: float = 1.7) -> np.ndarray:
    rel = e - e0
    edge = 0.5 + np.arctan(rel / 1.5) / np.pi
    wiggle = 0.06 * np.sin(rel / 9.0) * np.exp(-np.clip(rel, 0, None) / 120.0) * (rel > 0)
    return 0.35 - 2e-5 * (e - e0) + step * (edge + wiggle) * (1 - 1.5e-4 * np.clip(rel, 0, None))


def test_athena_xmu_is_normalised_as_athena_and_larch_do(tmp_path):
    from aso_workflows.spectra.xanes import XANESSimulator

    e = np.round(
        np.concatenate(
            [np.arange(8133.0, 8313.0, 2.0), np.arange(8313.0, 8400.0, 0.5), np.arange(8400.0, 8800.0, 2.0)]
        ),
        6,
    )
    mu = _raw_mu(e)
    path = tmp_path / "ni.xmu"
    rows = "\n".join(f"{a:.3f} {b:.8f}" for a, b in zip(e, mu, strict=True))
    path.write_text(
        "# Athena data file -- Athena version 0.9.26\n# Saving ni as mu(E)\n# .  Element=Ni   Edge=K\n"
        f"#------------------------\n#  e mu\n{rows}\n"
    )
    sim = XANESSimulator(absorber="Ni")
    spec = read_target(path, "xanes", simulator=sim)
    norm = spec.settings["normalisation"]
    assert norm["edge_step"] == pytest.approx(1.7, rel=0.05)
    assert spec.settings["e0"] == pytest.approx(8333.0, abs=1.0)  # max of dμ/dE
    x, y = spec.x, spec.y
    assert abs(np.mean(y[x < -30])) < 0.02  # pre-edge at 0
    assert np.mean(y[(x > 40) & (x < 100)]) == pytest.approx(1.0, abs=0.03)  # flattened post-edge at 1
    with pytest.raises(InputError, match="needs χ\\(k\\)"):
        read_target(path, "exafs")


def test_athena_nor_uses_the_flat_column_and_the_header_e0(tmp_path):
    e = np.round(np.arange(8233.0, 8500.0, 0.5), 6)
    rel = e - 8340.0
    flat = 0.5 + np.arctan(rel / 1.5) / np.pi
    path = tmp_path / "ni.nor"
    rows = "\n".join(f"{a:.3f} {0.9 * b:.8f} {b:.8f}" for a, b in zip(e, flat, strict=True))
    path.write_text(
        "# XDI/1.0 Demeter/0.9.26\n# Demeter.output_filetype: multicolumn normalized mu(E)\n"
        "# Element.symbol: Ni\n# Element.edge: K\n# .  E0=8340.000\n#------------------------\n"
        f"#  energy norm flat\n{rows}\n"
    )
    spec = read_target(path, "xanes")
    assert spec.settings["format"] == "athena" and spec.settings["e0"] == 8340.0
    assert np.allclose(spec.x, rel, atol=1e-6) and np.allclose(spec.y, flat, atol=1e-7)
