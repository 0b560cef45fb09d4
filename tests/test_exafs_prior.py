"""The EXAFS prior: FEFF's scattering paths of a reference structure re-summed for a candidate's geometry."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from aso_workflows.spectra.exafs import EXAFSSimulator
from aso_workflows.spectra.spectrum import Grid
from aso_workflows.surrogate.factory import surrogate_for_target
from aso_workflows.surrogate.priors.exafs import EXAFSPrior, _rms
from aso_workflows.surrogate.residual import PriorResidualSurrogate, load_surrogate
from aso_workflows.surrogate.settings import SurrogateSettings

pytest.importorskip("larch")

#: fcc Cu, one absorber, two shells and the first triangle paths (RPATH 3.9 Å, 3 legs): a few s of FEFF
SETTINGS: dict[str, Any] = {
    "absorber": "Cu",
    "supercell": (1, 1, 1),
    "radius": 5.0,
    "rpath": 3.9,
    "nlegs": 3,
    "sites": [0],
    "keep_paths": True,
}


def cu_fcc(a: float = 3.61) -> Structure:
    return Structure(
        Lattice.cubic(a), ["Cu"] * 4, [[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    )


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.std(b))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """FEFF on fcc Cu with its atoms moved 0.03 Å (the reference: unsymmetric, as the campaign's are) and
    on the same cell with one more atom moved by 0.2 Å."""
    sim = EXAFSSimulator(**SETTINGS)
    work = tmp_path_factory.mktemp("cu_prior")
    ref = cu_fcc()
    ref.perturb(0.03, min_distance=0.03, seed=1)
    moved = ref.copy()
    moved.translate_sites([1], [0.2 / 3.61, 0.0, 0.0], frac_coords=True)
    return (
        sim,
        ref,
        sim.simulate(ref, workdir=work / "ref"),
        moved,
        sim.simulate(moved, workdir=work / "moved"),
    )


def test_prior_reproduces_feff_and_follows_a_moved_atom(runs, one_torch_thread):
    sim, ref, ref_spec, moved, moved_spec = runs
    prior = EXAFSPrior(sim.settings_dict(), ["Cu"] * 4, sim.k())
    prior.prepare([ref], [ref_spec], None)
    summary = prior.summary()
    assert summary["s02"] and summary["instances"] > summary["paths"]  # degenerate paths were split
    assert _rel(prior.predict([ref])[0], np.asarray(ref_spec.values)) < 0.02
    # the geometry change is what the prior captures: far closer to FEFF than the reference's spectrum
    err_prior = _rel(prior.predict([moved])[0], np.asarray(moved_spec.values))
    err_ref = _rel(np.asarray(ref_spec.values), np.asarray(moved_spec.values))
    assert err_prior < err_ref / 3, (err_prior, err_ref)
    site_rows = prior.rows([moved])
    assert site_rows is not None  # the EXAFS prior has per-site rows
    rows = site_rows[0]
    assert np.allclose(rows[0], prior.predict([moved])[0]) and np.all(rows[1:] == 0)  # site 0 only
    again = EXAFSPrior.from_state(prior.state())
    assert np.allclose(again.predict([moved]), prior.predict([moved]))


def test_reference_refreshes_when_the_best_moves_far(runs):
    sim, ref, ref_spec, moved, moved_spec = runs
    assert _rms(ref, moved) == pytest.approx(0.2 * np.sqrt(3 / 16), rel=1e-3)  # one atom of 4, mean removed
    near = EXAFSPrior(sim.settings_dict(), ["Cu"] * 4, sim.k(), refresh_distance=0.1)
    near.prepare([ref, moved], [ref_spec, moved_spec], objectives=[1.0, 0.5])
    assert near.summary()["reference_index"] == 0  # the best is within 0.1 Å of the first: kept
    far = EXAFSPrior(sim.settings_dict(), ["Cu"] * 4, sim.k(), refresh_distance=0.01)
    far.prepare([ref, moved], [ref_spec, moved_spec], objectives=[1.0, 0.5])
    assert far.summary()["reference_index"] == 1  # refreshed: the paths of the best


def test_prior_residual_surrogate_on_exafs(runs, one_torch_thread):
    sim, ref, ref_spec, moved, moved_spec = runs
    grid = Grid(name="k", unit="Å^-1", values=sim.k().tolist())
    settings = SurrogateSettings(n_models=2, epochs=5, hidden=8, n_rbf=12, progress=False, device="cpu")
    model = surrogate_for_target("exafs", grid, ["Cu"] * 4, settings, absorber="Cu", simulator=sim)
    assert isinstance(model, PriorResidualSurrogate)
    metrics = model.fit([ref, moved], [ref_spec, moved_spec], objectives=[1.0, 0.5])
    assert metrics["residual"] == "trained" and metrics["prior"]["kind"] == "exafs"
    buf = io.BytesIO()
    model.save(buf)
    again = load_surrogate(buf.getvalue())
    assert np.allclose(again.predict([moved])[0], model.predict([moved])[0], atol=1e-5)
    off = EXAFSSimulator(**{**SETTINGS, "keep_paths": False})
    assert not isinstance(
        surrogate_for_target("exafs", grid, ["Cu"] * 4, settings, "Cu", off), PriorResidualSurrogate
    )
