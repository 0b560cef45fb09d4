"""Raw μ(E) targets: XDI, Athena projects and columns read, processed by Larch, and refused in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from aso_workflows.errors import InputError
from aso_workflows.spectra.exafs import EXAFSSimulator
from aso_workflows.spectra.targets import read_target
from aso_workflows.spectra.xanes import XANESSimulator
from aso_workflows.spectra.xas_files import read_mu
from aso_workflows.spectra.xas_processing import XASProcessing

pytest.importorskip("larch")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CU = EXAMPLES / "cu_exafs_measured" / "cu_metal_rt.xdi"
NI = EXAMPLES / "ni_joint_measured" / "ni_metal_rt.xdi"


def cu_sim(**kw):
    return EXAFSSimulator(absorber="Cu", kmin=3.0, kmax=17.0, kweight=2, **kw)


def _columns_file(path: Path, header: str, rows: np.ndarray) -> Path:
    lines = [f"# {header}"] + [" ".join(f"{v:.8g}" for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_xdi_is_processed_by_larch_into_the_simulators_chi_grid():
    t = read_target(CU, "exafs", simulator=cu_sim())
    s = t.settings
    assert (
        s["format"] == "xdi" and s["mode"] == "mu" and s["columns"] == {"energy": "energy", "mu": "mutrans"}
    )
    assert s["hints"]["element"] == "Cu" and s["hints"]["edge"] == "K"
    assert s["processed"]["e0"] == pytest.approx(8980.5, abs=0.6)  # Larch's find_e0 (Athena's E0)
    assert s["processed"]["edge_step"] == pytest.approx(2.73, abs=0.02)
    assert t.grid.values[0] == 3.0 and t.grid.values[-1] == 17.0 and t.absorber == "Cu"
    xas = t.extra["xas"]
    k, chi = np.asarray(xas["k"]), np.asarray(xas["chi"])
    assert k[0] == 0.0 and np.allclose(np.diff(k), 0.05)
    # the target is AUTOBK's χ(k) k²-weighted on the simulator's grid
    assert np.allclose(t.y, np.interp(t.x, k, chi) * t.x**2)
    for name in ("energy", "mu", "pre_edge", "post_edge", "bkg", "flat", "delta_chi"):
        assert name in xas
    # the AUTOBK background follows μ(E) above the edge (the oscillations are what is left)
    e, mu, bkg = (np.asarray(xas[n]) for n in ("energy", "mu", "bkg"))
    above = e > s["processed"]["e0"] + 50
    assert np.max(np.abs(mu[above] - bkg[above])) < 0.1 * s["processed"]["edge_step"]


def test_transmission_and_fluorescence_columns_make_the_same_mu():
    p = XASProcessing.model_validate({"columns": {"i0": "i0", "itrans": "itrans"}})
    trans = read_mu(CU, p)
    direct = read_mu(CU, XASProcessing())
    assert trans.mode == "transmission" and np.allclose(trans.mu, direct.mu, atol=1e-6)


def test_plain_columns_by_name_and_number_and_fluorescence(tmp_path):
    d = read_mu(CU, XASProcessing())
    i0 = np.linspace(1e5, 2e5, len(d.energy))
    rows = np.column_stack([d.energy, i0, d.mu * i0, d.mu])
    f = _columns_file(tmp_path / "cu.dat", "energy i0 iff mu", rows)
    fluo = read_mu(f, XASProcessing.model_validate({"columns": {"i0": "i0", "ifluor": "iff"}}))
    assert fluo.mode == "fluorescence" and np.allclose(fluo.mu, d.mu, rtol=1e-6)
    by_number = read_mu(f, XASProcessing.model_validate({"columns": {"energy": 0, "mu": 3}}))
    assert by_number.columns == {"energy": "energy", "mu": "mu"} and np.allclose(
        by_number.mu, d.mu, rtol=1e-6
    )
    sim = cu_sim()
    a = read_target(f, "exafs", simulator=sim, processing={"columns": {"i0": "i0", "ifluor": "iff"}})
    b = read_target(CU, "exafs", simulator=sim)
    assert np.allclose(a.y, b.y, atol=1e-3)


def test_an_athena_project_with_several_groups_needs_one_chosen(tmp_path):
    from larch.io import AthenaProject, read_xdi

    prj = tmp_path / "two.prj"
    proj = AthenaProject(str(prj))
    for f in (CU, NI):
        g = read_xdi(str(f))
        g.mu = g.mutrans
        proj.add_group(g)
    proj.save()
    sim = EXAFSSimulator(absorber="Ni", kmin=3.0, kmax=15.0)
    with pytest.raises(
        InputError, match=r"two.prj: holds 2 groups \['cu_metal_rt.xdi', 'ni_metal_rt.xdi'\]; choose"
    ):
        read_target(prj, "exafs", simulator=sim)
    by_label = read_target(prj, "exafs", simulator=sim, processing={"group": "ni_metal_rt.xdi"})
    by_number = read_target(prj, "exafs", simulator=sim, processing={"group": 1})
    assert by_label.values == by_number.values and by_label.source.endswith("#ni_metal_rt_xdi")
    with pytest.raises(InputError, match="is Cu data .* but settings.absorber is 'Ni'"):
        read_target(prj, "exafs", simulator=sim, processing={"group": 0})


@pytest.mark.parametrize(
    ("make", "processing", "words"),
    [
        (lambda d, t: CU, {"columns": {"mu": "muf"}}, r"has no column 'muf' \(processing.columns.mu\)"),
        (lambda d, t: CU, {"columns": {"mu": "i0"}}, "no clear absorption edge"),
        (
            lambda d, t: _columns_file(
                t / "flat.dat", "energy mu", np.column_stack([d.energy, 0 * d.mu + 1])
            ),
            {},
            "edge",
        ),
        (
            lambda d, t: _columns_file(t / "kev.dat", "energy mu", np.column_stack([d.energy / 1000, d.mu])),
            {},
            "keV",
        ),
        (
            lambda d, t: _columns_file(t / "x.dat", "energy a b", np.column_stack([d.energy, d.mu, d.mu])),
            {},
            "no μ",
        ),
        (lambda d, t: NI, {}, "is Ni K data .* but settings.absorber is 'Cu'"),
        (lambda d, t: CU, {"rbkg": -1}, r"processing.rbkg: Input should be greater than 0"),
        (lambda d, t: CU, {"columns": {"mu": "mutrans", "itrans": "itrans"}}, "give one of mu, itrans"),
        (
            lambda d, t: _text(t / "bad.xdi", "# XDI/1.0\n# junk\n"),
            {},
            "not a readable XDI",
        ),
    ],
)
def test_malformed_and_foreign_files_are_one_line_errors(tmp_path, make, processing, words):
    d = read_mu(CU, XASProcessing())
    path = make(d, tmp_path)
    with pytest.raises(InputError, match=words) as err:
        read_target(path, "exafs", simulator=cu_sim(), processing=processing)
    assert "\n" not in str(err.value)


def test_a_file_of_another_element_without_a_header_is_refused_by_its_edge_energy(tmp_path):
    d = read_mu(NI, XASProcessing())
    f = _columns_file(tmp_path / "unknown.dat", "energy mu", np.column_stack([d.energy, d.mu]))
    with pytest.raises(InputError, match=r"edge at 833\d\.\d eV, not at the Cu K edge \(8979"):
        read_target(f, "exafs", simulator=cu_sim())


def test_xanes_target_is_larchs_flattened_mu_relative_to_e0():
    sim = XANESSimulator(absorber="Cu")
    t = read_target(CU, "xanes", simulator=sim)
    assert t.grid == sim.grid()
    assert t.y[-1] == pytest.approx(1.0, abs=0.1) and abs(t.y[0]) < 0.05
    assert "bkg" not in t.extra["xas"]


def test_without_xraylarch_raw_mu_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "larch", None)
    monkeypatch.setitem(sys.modules, "larch.io", None)
    monkeypatch.setitem(sys.modules, "larch.xafs", None)
    with pytest.raises(InputError, match=r"need xraylarch .*pip install 'aso-workflows\[xas\]'") as err:
        read_target(CU, "exafs", simulator=cu_sim())
    assert "\n" not in str(err.value)


def test_processing_is_a_validated_section_of_the_target(tmp_path):
    from aso_workflows.config import load_config

    (tmp_path / "start.cif").write_text((EXAMPLES / "linio2_jt_pdf" / "start.cif").read_text())
    (tmp_path / "cu.xdi").write_bytes(CU.read_bytes())
    base = "name: x\nstart: start.cif\nbudget: 4\ninitial_size: 2\ntargets:\n  - technique: exafs\n    file: cu.xdi\n"
    (tmp_path / "c.yaml").write_text(base + "    settings: {absorber: Cu}\n    processing: {rbkg: 0}\n")
    with pytest.raises(
        InputError, match=r"field 'targets\[0\].processing.rbkg': Input should be greater than 0"
    ):
        load_config(tmp_path / "c.yaml", check_files=False)
