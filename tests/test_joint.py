"""One cell for a PDF and an EXAFS target: the shared expansion is fitted once for both."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from aso_workflows.spectra.fit import make_fitter
from aso_workflows.spectra.mismatch import Objective, TechniqueTerm
from aso_workflows.spectra.registry import make_simulator
from aso_workflows.spectra.targets import read_target

pytest.importorskip("larch")

NI = Path(__file__).resolve().parents[1] / "examples" / "ni_joint_measured"
EXAFS_FIT = {
    "model": "paths",
    "refine": ["s02", "e0", "sigma2", "expansion"],
    **{
        "kmin": 3.0,
        "kmax": 16.0,
        "dk": 4.0,
        "window": "kaiser",
        "kweight": 2,
        "space": "r",
        "rmin": 1.4,
        "rmax": 3.0,
    },
}


@pytest.fixture(scope="module")
def ni_terms():
    """The Ni X-ray PDF (1.5–8 Å) and the Ni foil EXAFS (first shell, one absorber) of fcc Ni, a = 3.52 Å."""
    s = Structure(
        Lattice.cubic(3.52), ["Ni"] * 4, [[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    )
    psim = make_simulator("pdf", rmin=1.5, rmax=8.0, qmax=40.0)
    esim = make_simulator(
        "exafs",
        absorber="Ni",
        supercell=[1, 1, 1],
        radius=4.0,
        rpath=2.6,
        nlegs=2,
        kmin=3.0,
        kmax=16.0,
        sites=[0],
        keep_paths=True,
    )
    ptgt = read_target(NI / "Ni_2-8.chi.gr", "pdf", simulator=psim)
    etgt = read_target(
        NI / "ni_metal_rt.xdi", "exafs", simulator=esim, processing={"rbkg": 1.0, "kweight": 1}
    )
    pdf = TechniqueTerm(
        technique="pdf",
        target=ptgt,
        fitter=make_fitter("pdf", ["scale", "qdamp", "uiso", "expansion"], ptgt, psim),
    )
    exafs = TechniqueTerm(technique="exafs", target=etgt, fitter=make_fitter("exafs", EXAFS_FIT, etgt, esim))
    return s, pdf, exafs, {"pdf": psim.simulate(s), "exafs": esim.simulate(s)}


def test_the_shared_expansion_is_one_value_between_the_techniques_own(ni_terms):
    s, pdf, exafs, spectra = ni_terms
    objective = Objective([pdf, exafs])
    assert list(objective.shared_parameters()) == ["expansion"]
    alone = {t.technique: t.fit(spectra[t.technique], s).parameters["expansion"] for t in (pdf, exafs)}
    total, fits = objective.evaluate_fitted(spectra, s)
    joint = fits["pdf"].parameters["expansion"]
    assert fits["exafs"].parameters["expansion"] == joint
    assert fits["exafs"].spectrum.extra["nuisance_fit"]["expansion"] == joint
    assert min(alone.values()) - 1e-4 <= joint <= max(alone.values()) + 1e-4
    assert fits["pdf"].statistics["expansion_alone"] == pytest.approx(alone["pdf"])
    assert fits["exafs"].statistics["expansion_alone"] == pytest.approx(alone["exafs"])
    assert fits["exafs"].statistics["first_shell_r"] == pytest.approx(3.52 / 2**0.5 * (1 + joint), abs=1e-3)
    # the joint value is the best single value: holding either technique's own is no better
    for a in alone.values():
        held = sum(
            t.value(t.fit(spectra[t.technique], s, fixed={"expansion": a}).spectrum) for t in (pdf, exafs)
        )
        assert total <= held + 1e-9


def test_a_parameter_refined_by_one_target_only_is_not_shared(ni_terms):
    s, pdf, exafs, spectra = ni_terms
    spec = {**EXAFS_FIT, "refine": ["s02", "e0", "sigma2"]}
    only_pdf = TechniqueTerm(
        technique="exafs",
        target=exafs.target,
        fitter=make_fitter("exafs", spec, exafs.target, exafs.fitter.simulator),
    )
    objective = Objective([pdf, only_pdf])
    assert objective.shared_parameters() == {}
    _, fits = objective.evaluate_fitted(spectra, s)
    assert "expansion" not in fits["exafs"].parameters and fits["exafs"].statistics["expansion"] == 0.0
