"""A campaign from a beamline XDI file: Larch processing, FEFF paths in the store, the FEFFIT-grade fit
of every candidate, the report's μ(E) figure. Small: 3 evaluations of a 4-atom Cu cell, one absorber,
first shell only (random optimiser: no surrogate)."""

from __future__ import annotations

from pathlib import Path

import pytest
from campaign_files import campaign_yaml

from aso_workflows.campaign.local import LocalCampaignRunner
from aso_workflows.config import load_config
from aso_workflows.report import write_outputs

pytest.importorskip("larch")

CU = Path(__file__).resolve().parents[1] / "examples" / "cu_exafs_measured"


@pytest.fixture(scope="module")
def cu_campaign(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cu_xdi")
    pair = {
        "start": str(CU / "start.cif"),
        "targets": [
            {
                "technique": "exafs",
                "file": str(CU / "cu_metal_rt.xdi"),
                "settings": {
                    "absorber": "Cu", "supercell": [1, 1, 1], "sites": [0], "radius": 4.0, "rpath": 2.6,
                    "nlegs": 2, "kmin": 3.0, "kmax": 17.0,
                },
                "processing": {"rbkg": 1.0, "kweight": 1},
                "fit": {
                    "model": "paths", "refine": ["s02", "e0", "sigma2", "expansion"], "kmin": 3.0, "kmax": 17.0,
                    "dk": 4.0, "window": "kaiser", "kweight": 2, "space": "r", "rmin": 1.4, "rmax": 3.0,
                },
            }
        ],
        "sampler": {"min_displacement": 0.01, "max_displacement": 0.03},
        "min_distances": {"Cu-Cu": 2.2},
    }  # fmt: skip
    # ASO: the surrogate (FEFF's paths as its prior) trains on the fitted spectra of a measured target
    cfg = load_config(
        campaign_yaml(tmp, "cu-xdi", pair=pair, optimizer="aso", budget=4, initial_size=2, batch_size=1)
    )
    state = LocalCampaignRunner(progress=False).run(cfg)
    paths = write_outputs(state, cfg.output_dir)
    return cfg, state, paths


@pytest.mark.slow  # 4 FEFF runs, Larch's import and processing: ~50 s idle, 120 s on a busy machine
def test_the_campaign_fits_every_candidate_on_its_own_paths(cu_campaign):
    cfg, state, paths = cu_campaign
    assert cfg.targets[0].settings["keep_paths"] is True  # turned on by fit.model: paths
    target = state.targets["exafs"]
    assert target.settings["processing"]["rbkg"] == 1.0 and "bkg" in target.extra["xas"]
    evals = state.evaluations()
    assert len(evals) == 4 and state.doc["stop_reason"] == "budget spent"
    assert [e["kind"] for e in evals][-1] in ("aso", "fallback")
    model = state.db.models.find_one({"campaign": state.name, "technique": "exafs", "status": "completed"})
    assert model is not None and model["metrics"]["prior"]["kind"] == "exafs", model["metrics"]
    for e in evals:
        fit = e["fit"]["exafs"]
        assert set(fit["parameters"]) == {"s02", "e0", "sigma2", "expansion"} == set(fit["uncertainties"])
        assert {"chi2_reduced", "n_independent", "first_shell_r"} <= set(fit["statistics"])
        assert e["goodness"]["exafs"] == {"name": "R", "value": fit["goodness"]}
        # the paths went to the blob store; the campaign reads them back into the spectrum
        raw = state.db.spectra._coll.find_one({"_id": e["simulated_spectra"]["exafs"]})
        assert set(raw["feff_paths"]) == {"aso_blob", "bytes"}
        assert state.spectrum(e["simulated_spectra"]["exafs"]).extra["feff_paths"][0]["nleg"] == 2
        assert "feff_paths" not in state.spectrum(e["spectra"]["exafs"]).extra  # the fitted one: none
    start = next(e for e in evals if e["kind"] == "start")
    assert start["goodness"]["exafs"]["value"] < 1.2 * 0.00272  # Larch's documented fit: R 0.00272
    assert start["fit"]["exafs"]["statistics"]["first_shell_r"] == pytest.approx(2.5418, abs=0.01)
    assert paths["xas_png"].is_file() and "Measured μ(E)" in paths["report_html"].read_text()
