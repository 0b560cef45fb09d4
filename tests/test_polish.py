"""The exact finish (``polish:``) and refinement where it pays: a campaign is never worse than a
pdffit2 refinement from its own start; every PDF calculation is counted."""

from __future__ import annotations

import numpy as np
import pytest
from campaign_files import DATA, campaign_yaml
from pymatgen.core import Structure

from aso_workflows.campaign.local import LocalCampaignRunner
from aso_workflows.config import load_config
from aso_workflows.errors import InputError
from aso_workflows.optimizers.sampling import PerturbationSampler

MIN_DISTANCES = {"Ni-O": 1.6, "Ni-Ni": 2.4, "O-O": 2.4}


def _pair(tmp_path):
    """NiO: the target a seeded 0.1–0.25 Å perturbation; the start a 0.1 Å perturbation of NiO (P1)."""
    nio = Structure.from_file(str(DATA / "NiO.cif"))
    sample = PerturbationSampler(
        min_displacement=0.1, max_displacement=0.25, min_distances=MIN_DISTANCES, seed=5
    )
    sample.sample(nio, 1)[0].to(filename=str(tmp_path / "target.cif"))
    near = PerturbationSampler(
        min_displacement=0.1, max_displacement=0.1, min_distances=MIN_DISTANCES, seed=9
    )
    near.sample(nio, 1)[0].to(filename=str(tmp_path / "start.cif"))
    return {
        "start": str(tmp_path / "start.cif"),
        "targets": [{"technique": "pdf", "structure": str(tmp_path / "target.cif")}],
        "sampler": {"min_displacement": 0.05, "max_displacement": 0.25},
        "min_distances": MIN_DISTANCES,
    }


def _run(path):
    return LocalCampaignRunner(progress=False).run(load_config(path))


def test_polish_ends_a_campaign_no_worse_than_a_refinement_of_its_start(tmp_path, one_torch_thread):
    from aso_workflows.optimizers.diffpy_refine import pdf_calculations
    from aso_workflows.optimizers.polish import refine_pdf

    path = campaign_yaml(
        tmp_path,
        "polished",
        pair=_pair(tmp_path),
        optimizer="random",
        budget=6,
        initial_size=3,
        polish={"top": 1, "max_calls": 40},
        surrogate=None,
        proposal=None,
    )
    state = _run(path)
    evals = state.evaluations()
    kinds = [e["kind"] for e in evals]
    assert state.doc["status"] == "completed" and state.doc["stop_reason"] == "budget spent"
    assert kinds.count("polish") == 2 and len(evals) == 8  # the start and the best, after the budget
    assert not list(state.db.models.find({"campaign": state.name}))  # nothing trained for it
    # a refinement of the start, as a user would run it: the campaign's answer is not worse
    alone = refine_pdf(state, state.start, None, 40)
    spectrum = state.simulators["pdf"].simulate(alone.structure)
    objective, _ = state.objective.evaluate_fitted({"pdf": spectrum}, alone.structure)
    best = state.best(1)[0]
    assert best["kind"] == "polish" and best["objective"] <= objective * (1 + 1e-6)
    start = next(e for e in evals if e["kind"] == "start")
    assert best["objective"] < start["objective"] / 100
    props = {p["_id"]: p for p in state.proposals()}
    polish = [props[e["proposal_id"]]["predicted"]["polish"] for e in evals if e["kind"] == "polish"]
    assert {p["origin"] for p in polish} >= {"start"} and all(p["pdf_calculations"] >= 2 for p in polish)
    calc = pdf_calculations(evals, props)
    assert calc[-1] == len(evals) + sum(p["pdf_calculations"] for p in polish)
    # resumed: nothing is polished twice
    again = _run(path)
    assert len(again.evaluations()) == 8
    _what_pdf_users_see(state, tmp_path)


def _what_pdf_users_see(state, tmp_path):
    """The report, the web page's section and ``aso results fit``: PDFgui's fit plot, Rw, bonds."""
    from typer.testing import CliRunner

    from aso_workflows.cli import app
    from aso_workflows.report import write_outputs
    from aso_workflows.report.pdf_fit import pdf_fit_view
    from aso_workflows.schemas import EvaluationDoc

    best = EvaluationDoc.from_mongo(state.best(1)[0])
    view = pdf_fit_view(state, best)
    assert (
        view is not None
        and view["kind"] == "polish"
        and view["rw"] == pytest.approx(best.goodness["pdf"].value)
    )
    assert np.allclose(np.asarray(view["data"]) - np.asarray(view["model"]), view["difference"])
    pairs = {b["pair"]: b for b in view["bonds"]}
    assert "Ni-O" in pairs and pairs["Ni-O"]["n"] == 24  # 4 Ni × 6 O (the start is perturbed)
    paths = write_outputs(state, tmp_path / "report")
    page = paths["report_html"].read_text()
    assert paths["pdf_fit_png"].is_file() and "id='pdf-fit'" in page and "id='pdf-bonds'" in page
    store = state.db.spec.path
    out = CliRunner().invoke(app, ["results", "fit", state.name, "--store", str(store), "--json"])
    assert out.exit_code == 0, out.output
    assert '"kind": "polish"' in out.output and '"bonds"' in out.output


def test_polish_needs_a_pdf_target(tmp_path):
    pair = _pair(tmp_path)
    pair["targets"] = [
        {"technique": "exafs", "structure": pair["targets"][0]["structure"], "settings": {"absorber": "Ni"}}
    ]
    path = campaign_yaml(tmp_path, "no-pdf", pair=pair, optimizer="random", polish={"top": 1})
    with pytest.raises(InputError, match="polish refines against a PDF target"):
        load_config(path)
