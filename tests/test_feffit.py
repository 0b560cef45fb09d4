"""FEFF scattering paths kept with the simulation, and the FEFFIT-grade fit against Larch's own feffit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from aso_workflows.errors import InputError
from aso_workflows.spectra.exafs import EXAFSSimulator
from aso_workflows.spectra.feff_paths import FeffPath, paths_of
from aso_workflows.spectra.fit import make_fitter
from aso_workflows.spectra.fit.feffit import shells
from aso_workflows.spectra.targets import read_target

pytest.importorskip("larch")

CU = Path(__file__).resolve().parents[1] / "examples" / "cu_exafs_measured" / "cu_metal_rt.xdi"
# Larch's documented Cu fit (examples/cu_exafs_measured/doc_feffit1.out): k 3–17, R 1.4–3.0, kw 2, Kaiser dk 4
LARCH_FIT = {"kmin": 3.0, "kmax": 17.0, "dk": 4.0, "window": "kaiser", "space": "r", "rmin": 1.4, "rmax": 3.0}


def cu_fcc(a: float = 3.61) -> Structure:
    return Structure(
        Lattice.cubic(a), ["Cu"] * 4, [[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    )


@pytest.fixture(scope="module")
def cu_run(tmp_path_factory):
    """Two absorbers of fcc Cu, first shell only (RPATH 2.6 Å, 2 legs): ~2 × 2 s of FEFF."""
    sim = EXAFSSimulator(
        absorber="Cu",
        supercell=(1, 1, 1),
        radius=4.0,
        rpath=2.6,
        nlegs=2,
        kmin=3.0,
        kmax=17.0,
        sites=[0, 1],
        keep_paths=True,
    )
    work = tmp_path_factory.mktemp("cu_feff")
    spectrum = sim.simulate(cu_fcc(), workdir=work)
    target = read_target(CU, "exafs", simulator=sim)
    return sim, spectrum, target, work


def test_feff_paths_are_kept_parsed_by_larch_and_rebuilt_without_files(cu_run):
    from larch.xafs import feffpath

    sim, spectrum, _, work = cu_run
    paths = paths_of(spectrum.extra)
    assert [(p.site, p.index, p.nleg, p.degen) for p in paths] == [(0, 1, 2, 12.0), (1, 1, 2, 12.0)]
    p = paths[0]
    assert p.reff == pytest.approx(3.61 / np.sqrt(2), abs=1e-3) and p.distances() == pytest.approx(
        [p.reff] * 2, abs=1e-3
    )
    k = np.arange(0, 17.5, 0.05)
    from_file = feffpath(
        str(work / "site_0000" / "feff0001.dat"), s02=0.9, e0=3.0, sigma2=0.006, deltar=-0.01
    )
    rebuilt = FeffPath.model_validate(p.model_dump(mode="json")).larch_path(
        s02=0.9, e0=3.0, sigma2=0.006, deltar=-0.01
    )
    from_file._calc_chi(k=k)
    rebuilt._calc_chi(k=k)
    assert np.array_equal(from_file.chi, rebuilt.chi)


def test_feffit_grade_fit_equals_larchs_feffit_on_the_files(cu_run):
    """Two identical absorbers averaged (degeneracy halved each) are one absorber: the same fit as
    Larch's own feffit on the feff0001.dat file, to high precision."""
    from larch import Group
    from larch.fitting import param, param_group
    from larch.xafs import feffit, feffit_dataset, feffit_transform, feffpath

    sim, spectrum, target, work = cu_run
    spec = {"model": "paths", "refine": ["s02", "e0", "sigma2", "expansion"], **LARCH_FIT}
    ours = make_fitter("exafs", spec, target, sim).fit(spectrum)

    xas = target.extra["xas"]
    data = Group(k=np.asarray(xas["k"]), chi=np.asarray(xas["chi"]), delta_chi=np.asarray(xas["delta_chi"]))
    pars = param_group(
        amp=param(1.0, vary=True, min=0, max=3),
        del_e0=param(0.0, vary=True, min=-15, max=15),
        sigma2=param(0.003, vary=True, min=-0.005, max=0.05),
        expansion=param(0.0, vary=True, min=-0.05, max=0.05),
    )
    path = feffpath(
        str(work / "site_0000" / "feff0001.dat"),
        s02="amp",
        e0="del_e0",
        sigma2="sigma2",
        deltar="expansion*reff",
    )
    trans = feffit_transform(
        kmin=3, kmax=17, kweight=2, dk=4, window="kaiser", rmin=1.4, rmax=3.0, fitspace="r"
    )
    larch = feffit(pars, feffit_dataset(data=data, paths={"p1": path}, transform=trans))

    assert ours.goodness == pytest.approx(larch.rfactor, rel=1e-6)
    assert ours.statistics["chi2_reduced"] == pytest.approx(larch.chi2_reduced, rel=1e-6)
    for mine, theirs in (("s02", "amp"), ("e0", "del_e0"), ("sigma2", "sigma2"), ("expansion", "expansion")):
        assert ours.parameters[mine] == pytest.approx(larch.params[theirs].value, rel=1e-5, abs=1e-9)
        assert ours.uncertainties[mine] == pytest.approx(larch.params[theirs].stderr, rel=1e-4)
    # the Cu foil, Larch's ranges, a path from our FEFF 10: Larch's documented fit is R 0.00272, Cu–Cu 2.5418 Å
    assert ours.goodness < 1.2 * 0.00272
    assert ours.statistics["first_shell_r"] == pytest.approx(2.5418, abs=0.01)
    assert ours.parameters["s02"] == pytest.approx(0.93, abs=0.1)
    # per-absorber spectra: each absorber's own χ, averaging to the fitted spectrum
    assert ours.spectrum.site_values is not None
    assert np.allclose(np.mean(ours.spectrum.site_values, axis=0), ours.spectrum.y)
    assert "feff_paths" not in ours.spectrum.extra and ours.spectrum.extra["nuisance_fit"] == ours.parameters


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"sigma2_model": "debye", "temperature": 295}, {"s02", "e0", "theta"}),
        ({"sigma2_model": "einstein"}, {"s02", "e0", "theta"}),
        ({"sigma2_model": "shell", "space": "k", "kweight": [1, 2, 3]}, {"s02", "e0", "sigma2_1"}),
        ({"space": "q", "window": "hanning", "dk": 1}, {"s02", "e0", "sigma2"}),
    ],
)
def test_sigma2_models_spaces_and_several_kweights(cu_run, options, names):
    sim, spectrum, target, _ = cu_run
    spec = {**LARCH_FIT, "model": "paths", "refine": ["s02", "e0", "sigma2"], **options}
    fit = make_fitter("exafs", spec, target, sim).fit(spectrum)
    assert set(fit.parameters) == names and set(fit.uncertainties) == names
    # one shell cannot fit all of χ(k) (k space holds every shell): R is larger there
    assert 0 < fit.goodness < (0.4 if spec["space"] == "k" else 0.1) and fit.status == "converged"
    if "theta" in names:  # a Cu foil at room temperature: θ_D of Cu is ~315 K (correlated Debye)
        assert 150 < fit.parameters["theta"] < 600


def test_fixed_expansion_and_bad_declarations(cu_run):
    sim, spectrum, target, _ = cu_run
    spec = {"model": "paths", "refine": ["s02", "e0", "sigma2", "expansion"], **LARCH_FIT}
    fitter = make_fitter("exafs", spec, target, sim)
    fixed = fitter.fit(spectrum, fixed={"expansion": 0.01})
    assert "expansion" not in fixed.parameters and fixed.statistics["expansion"] == 0.01
    assert fixed.statistics["first_shell_r"] == pytest.approx(3.61 / np.sqrt(2) * 1.01, abs=1e-3)
    with pytest.raises(InputError, match=r"exafs cannot take \['scale'\]"):
        fitter.fit(spectrum, fixed={"scale": 1.0})
    no_paths = EXAFSSimulator(absorber="Cu", kmin=3.0, kmax=17.0)
    with pytest.raises(
        InputError, match="fit.model: 'paths' needs the EXAFS simulator's settings.keep_paths"
    ):
        make_fitter("exafs", spec, target, no_paths)
    with pytest.raises(InputError, match="fit.space: 'q'"):
        make_fitter("exafs", {"refine": ["s02"], "space": "q"}, target, no_paths)
    with pytest.raises(InputError, match="fit.kmax: 18 Å⁻¹ is beyond the data"):
        make_fitter("exafs", {**spec, "kmax": 18.0}, target, sim)


def test_shells_group_paths_by_distance():
    def path(label_site, reff, nleg=2):
        z = [0.0] * 57
        return FeffPath(
            site=label_site, index=int(reff * 100), nleg=nleg, degen=1, reff=reff, geom=[], header={},
            k=z, real_phc=z, mag_feff=z, pha_feff=z, red_fact=z, lam=z, rep=z,
        )  # fmt: skip

    ps = [path(0, 2.50), path(0, 2.58), path(0, 3.61), path(0, 4.42), path(0, 3.80, nleg=3)]
    assert shells(ps, 0.15) == {"s0p250": 1, "s0p258": 1, "s0p361": 2, "s0p442": 3, "s0p380": 2}


def test_paths_go_to_the_blob_store_and_come_back(tmp_path):
    from aso_workflows.store import StoreSpec, open_store

    db = open_store(StoreSpec(kind="embedded", path=str(tmp_path / "store")))
    paths = [{"site": 0, "index": 1, "k": list(np.linspace(0, 18, 57))}]
    db.spectra.update_one(
        {"_id": "fp:exafs:key"}, {"$setOnInsert": {"spectrum": {}, "feff_paths": paths}}, upsert=True
    )
    raw = db.spectra._coll.find_one({"_id": "fp:exafs:key"})
    assert set(raw["feff_paths"]) == {"aso_blob", "bytes"}
    back = db.spectra.find_one({"_id": "fp:exafs:key"})
    assert back is not None and back["feff_paths"] == paths
    db.close()


def test_an_r_space_fit_is_scored_in_r_space_by_the_campaign(cu_run):
    """The objective of a target fitted in R space is the MSE of complex χ(R) over the fit's R range
    (relative to its variance there), the same for a fitted candidate and for a spectrum as predicted."""
    from aso_workflows.spectra.mismatch import Objective, TechniqueTerm

    sim, spectrum, target, _ = cu_run
    spec = {"model": "paths", "refine": ["s02", "e0", "sigma2", "expansion"], **LARCH_FIT}
    term = TechniqueTerm(technique="exafs", target=target, fitter=make_fitter("exafs", spec, target, sim))
    total, fits = Objective([term]).evaluate_fitted({"exafs": spectrum})
    again, mses = Objective([term]).evaluate({"exafs": fits["exafs"].spectrum})
    assert total == pytest.approx(again, rel=1e-12) and mses["exafs"] == pytest.approx(fits["exafs"].mse)
    # in R space the shells beyond 3 Å that one path does not model cost nothing: a small objective,
    # where the window-weighted k-space comparison of the same fit is dominated by them
    k_term = TechniqueTerm(
        technique="exafs", target=target, fitter=make_fitter("exafs", {**spec, "space": "k"}, target, sim)
    )
    assert total < 0.05 < k_term.value(fits["exafs"].spectrum)
