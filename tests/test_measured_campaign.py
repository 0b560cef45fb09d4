"""A campaign against a measured-style target: nuisance fit in the evaluation job, stored and shown.

The target is the Jahn–Teller LiNiO2 PDF scaled ×0.7 and broadened with Qdamp 0.05, written as a
PDFgetX3-style file (header with ``qmax``, four columns with dG); the campaign's simulator has Qdamp
0.02 and fits ``[scale, qdamp]`` for every candidate. Small: 6 evaluations of 12 atoms.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from campaign_files import EXAMPLE, campaign_yaml
from typer.testing import CliRunner

from aso_workflows.campaign.local import LocalCampaignRunner
from aso_workflows.cli import app
from aso_workflows.config import load_config
from aso_workflows.errors import InputError
from aso_workflows.report import write_outputs
from aso_workflows.spectra.goodness import rw
from aso_workflows.spectra.pdf import PDFSimulator
from aso_workflows.structures import load_structure


def _measured_file(path, radiation: str = "xray", scale: float = 0.7, qdamp: float = 0.05):
    sim = PDFSimulator(rmin=0.5, rmax=12.0, qmax=18.0, qdamp=qdamp, radiation=radiation)
    spec = sim.simulate(load_structure(EXAMPLE / "target.cif"))
    rows = "\n".join(f"{r:.4f} {scale * g:.8f} 0.0 0.02" for r, g in zip(spec.x, spec.y, strict=True))
    mode = "xray" if radiation == "xray" else "neutron"
    path.write_text(
        f"[DEFAULT]\nversion = 2.1\n[PDFgetX3]\nmode = {mode}\nqmax = 18.0\n\n#### start data\n#L r G dr dG\n{rows}\n"
    )
    return path


def _campaign(tmp_path, name="measured", radiation="xray", **fields):
    tmp_path.mkdir(parents=True, exist_ok=True)
    target = _measured_file(tmp_path / "measured.gr", radiation=radiation)
    pair = {
        "start": str(EXAMPLE / "start.cif"),
        "targets": [
            {
                "technique": "pdf",
                "file": str(target),
                "settings": fields.pop("settings", {"qdamp": 0.02}),
                "fit": fields.pop("fit", ["scale", "qdamp"]),
            }
        ],
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.3},
        "min_distances": {"Ni-O": 1.7, "Li-O": 1.7, "O-O": 2.2},
    }
    return campaign_yaml(tmp_path, name, pair=pair, **fields)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("measured")
    path = _campaign(tmp)
    cfg = load_config(path)
    state = LocalCampaignRunner(progress=False).run(cfg)
    write_outputs(state, cfg.output_dir)  # what aso run writes after the runner
    return path, cfg, state


def test_the_files_qmax_is_used_and_every_evaluation_stores_its_fit(measured):
    _, cfg, state = measured
    assert cfg.targets[0].settings["qmax"] == 18.0 and cfg.targets[0].settings["radiation"] == "xray"
    evals = state.evaluations()
    assert len(evals) == cfg.budget
    target = state.targets["pdf"]
    for e in evals:
        fit = e["fit"]["pdf"]
        assert set(fit["parameters"]) == {"scale", "qdamp"}
        # (the candidates are not the target: Qdamp also takes up some of their disorder)
        assert 0.5 < fit["parameters"]["scale"] < 1.0 and 0.0 <= fit["parameters"]["qdamp"] <= 0.3
        assert e["goodness"]["pdf"]["name"] == "Rw"
        # the spectrum the surrogate learns is the fitted one; the simulation is kept beside it
        assert e["spectra"]["pdf"].startswith(e["simulated_spectra"]["pdf"] + ":fit:")
        fitted = state.spectrum(e["spectra"]["pdf"])
        assert e["goodness"]["pdf"]["value"] == pytest.approx(rw(target.y, fitted.y), rel=1e-9)
        assert e["mse"]["pdf"] == pytest.approx(float(np.mean((fitted.y - target.y) ** 2)), rel=1e-9)
        assert e["objective"] == pytest.approx(e["mse"]["pdf"] / np.var(target.y), rel=1e-9)
        assert fitted.extra["nuisance_fit"] == fit["parameters"]
    # the surrogate's predictions live in the target's space (scale 0.7), not the simulation's
    proposed = [p for p in state.proposals() if p["iteration"] > 0]
    assert proposed
    mean = np.asarray(proposed[0]["predicted"]["pdf"]["mean"])
    raw = state.spectrum(evals[0]["simulated_spectra"]["pdf"]).y
    assert np.ptp(mean) < 0.9 * np.ptp(raw)


def test_history_status_results_and_report_show_rw_and_the_fitted_values(measured):
    path, cfg, state = measured
    with open(cfg.output_dir / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"Rw_pdf", "fit_pdf_scale", "fit_pdf_qdamp", "mse_pdf"} <= set(rows[0])
    assert all(float(r["Rw_pdf"]) > 0 for r in rows if r["status"] == "completed")
    runner = CliRunner()
    status = runner.invoke(app, ["status", str(path), "--json"])
    assert status.exit_code == 0, status.output
    summary = json.loads(status.stdout)
    assert summary["best_goodness"]["pdf"]["name"] == "Rw" and summary["start_goodness"]["pdf"]["value"] > 0
    table = runner.invoke(app, ["status", str(path)])
    assert "best Rw (pdf)" in table.stdout
    best = runner.invoke(app, ["results", "best", str(path), "-n", "2", "--json"])
    assert best.exit_code == 0, best.output
    first = json.loads(best.stdout)[0]
    assert first["goodness"]["pdf"]["name"] == "Rw" and set(first["fit"]["pdf"]) == {"scale", "qdamp"}
    html = (cfg.output_dir / "report.html").read_text()
    assert "best Rw (pdf)" in html and "fitted (pdf)" in html


def test_resuming_with_another_fit_is_refused(measured, tmp_path):
    import yaml

    path, cfg, _ = measured
    doc = yaml.safe_load(path.read_text())
    doc["targets"][0]["fit"] = ["scale", "qdamp", "delta2"]
    other = path.with_name("measured_other_fit.yaml")
    other.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="other targets/settings/fit"):
        LocalCampaignRunner(progress=False).run(load_config(other))


def test_a_file_contradicting_the_radiation_is_refused_in_one_line(tmp_path):
    path = _campaign(tmp_path, radiation="neutron", settings={"radiation": "xray", "qdamp": 0.02})
    with pytest.raises(InputError) as err:
        load_config(path)
    msg = str(err.value)
    assert "measured.gr" in msg and "neutron" in msg and "radiation" in msg and "\n" not in msg
    # without a radiation setting the file's header decides
    ok = _campaign(tmp_path / "ok", radiation="neutron")
    assert load_config(ok).targets[0].settings["radiation"] == "neutron"


@pytest.mark.parametrize(
    ("fit", "field"),
    [
        (["scale", "s02"], "targets[0].fit.refine"),
        ({"refine": ["scale"], "window": "kaiser"}, "targets[0].fit"),
        ({"refine": ["scale"], "weights": "sigma"}, "targets[0].fit.weights"),
    ],
)
def test_a_bad_fit_declaration_names_its_field(tmp_path, fit, field):
    path = _campaign(tmp_path, fit=fit)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert f"'{field}" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slurm
def test_the_fit_runs_in_the_slurm_evaluation_jobs_and_a_rerun_resumes(slurm_testbed, slurm_queues, tmp_path):
    """Through the cluster runner (what ``aso submit`` runs): each record job fits on the compute node."""
    from aso_workflows.cluster.runner import ClusterCampaignRunner
    from aso_workflows.jobstore import shared_job_store
    from aso_workflows.testing.launchpad import mongomock_launchpad

    path = _campaign(tmp_path, name="measured-slurm", optimizer="random", budget=5, initial_size=2)
    cfg = load_config(path)
    lp, job_store = mongomock_launchpad(), shared_job_store(tmp_path / "jobstore")

    def run():
        runner = ClusterCampaignRunner(
            launchpad=lp,
            launch_dir=tmp_path / "launches",
            queues=slurm_queues,
            job_store=job_store,
            timeout=900,
        )
        return runner.run(cfg)

    state, summary = run()
    assert summary.workflow_state == "COMPLETED", summary.as_dict()
    evals = state.evaluations()
    assert len(evals) == cfg.budget
    jobs = {r.slurm_job_id for r in summary.launches}
    for e in evals:
        assert e["provenance"]["pdf"]["slurm_job_id"] in jobs  # simulated in a Slurm job
        assert set(e["fit"]["pdf"]["parameters"]) == {"scale", "qdamp"} and e["goodness"]["pdf"]["value"] > 0
        assert state.has_spectrum(e["spectra"]["pdf"])  # the fitted spectrum, written by the record job
    before = {e["_id"]: e["fit"] for e in evals}
    state, _ = run()  # a second submit of the same campaign: resumes, nothing evaluated again
    after = state.evaluations()
    assert {e["_id"]: e["fit"] for e in after} == before
