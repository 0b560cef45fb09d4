"""Whole campaigns on the embedded default (jobflow run_locally + montydb), small and fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from campaign_files import campaign_yaml

from aso_workflows.campaign.local import LocalCampaignRunner
from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.config import ConfigOverrides, load_config
from aso_workflows.report import write_outputs

EXAMPLE = Path(__file__).parents[1] / "examples" / "linio2_jt_pdf"

TINY_SURROGATE = {"n_models": 2, "hidden": 16, "n_layers": 2, "n_rbf": 16, "epochs": 30, "patience": 10}


def write_campaign(tmp_path: Path, **fields) -> Path:
    defaults = {"budget": 10, "initial_size": 4, "seed": 1, "surrogate": TINY_SURROGATE}
    defaults["proposal"] = {"n_starts": 16, "steps": 20}
    return campaign_yaml(tmp_path, fields.pop("name", "tiny"), **{**defaults, **fields})


def _counts(state: CampaignState) -> tuple[int, int, int]:
    db = state.db
    return (
        db.evaluations.count_documents({"campaign": state.name}),
        db.spectra.count_documents({}),
        len({e["fingerprint"] for e in state.evaluations(status=None)}),
    )


def test_random_campaign_spends_budget_and_writes_outputs(tmp_path):
    cfg = load_config(write_campaign(tmp_path, optimizer="random", name="rand"))
    state = LocalCampaignRunner(progress=False).run(cfg)
    assert state.doc["status"] == "completed"
    assert state.n_used() == cfg.budget
    n_eval, n_spectra, n_unique = _counts(state)
    assert n_eval == n_unique == cfg.budget
    assert n_spectra == cfg.budget  # the target's spectrum is not cached as an evaluation
    out = cfg.output_dir
    assert not (out / "report.html").exists()  # the runner writes no outputs: the command that asks does
    write_outputs(state, out)
    for f in ("best_01.cif", "history.csv", "report.png", "report.html"):
        assert (out / f).is_file(), f
    # kinds: the start structure, initial perturbations and proposals
    kinds = [e["kind"] for e in state.evaluations()]
    assert kinds.count("start") == 1 and kinds.count("initial") == cfg.initial_size


def test_aso_campaign_trains_models_and_records_predictions(tmp_path):
    cfg = load_config(write_campaign(tmp_path))
    state = LocalCampaignRunner(progress=False).run(cfg)
    assert state.n_used() == cfg.budget
    models = list(state.db.models.find({"campaign": "tiny"}))
    iterations = sorted({m["iteration"] for m in models})
    assert iterations[0] == 0 and len(iterations) >= 3
    for m in models:
        assert state.db.blobs.exists(m["weights"])
        assert m["n_train"] >= cfg.initial_size + 1
    proposed = [p for p in state.proposals() if p["iteration"] > 0]
    assert proposed and all(p["predicted"] and "objective" in p["predicted"] for p in proposed)
    assert all(len(p["predicted"]["pdf"]["mean"]) == 900 for p in proposed)
    n_eval, _, n_unique = _counts(state)
    assert n_eval == n_unique == cfg.budget


def test_rerun_resumes_without_simulating_again(tmp_path):
    path = write_campaign(tmp_path, optimizer="random", name="resume", budget=8)
    cfg = load_config(path)
    state = LocalCampaignRunner(progress=False).run(cfg)
    before = _counts(state)
    state = LocalCampaignRunner(progress=False).run(load_config(path))
    assert _counts(state) == before  # nothing simulated or stored twice
    # a larger budget continues the same campaign
    cfg = load_config(path, ConfigOverrides(budget=12))
    state = LocalCampaignRunner(progress=False).run(cfg)
    assert state.n_used() == 12
    n_eval, n_spectra, n_unique = _counts(state)
    assert n_eval == n_unique == 12 and n_spectra == 12


def test_different_start_under_same_name_is_refused(tmp_path):
    from aso_workflows.errors import InputError

    path = write_campaign(tmp_path, optimizer="random", name="clash", budget=6)
    LocalCampaignRunner(progress=False).run(load_config(path))
    other = write_campaign(
        tmp_path, optimizer="random", name="clash", budget=6, start=str(EXAMPLE / "target.cif")
    )
    with pytest.raises(InputError, match="different start structure"):
        LocalCampaignRunner(progress=False).run(load_config(other))


@pytest.mark.slow
def test_interrupted_aso_run_resumes_without_duplicates(tmp_path):
    """Kill `aso run` mid-campaign (SIGKILL, like a crash), run it again: it finishes, nothing duplicated."""
    path = write_campaign(tmp_path, name="crash", budget=14, initial_size=4, batch_size=2)
    cfg = load_config(path)
    aso = [sys.executable, "-m", "aso_workflows.cli", "run", str(path), "--quiet"]
    proc = subprocess.Popen(aso, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    db = get_db(cfg.store_spec())
    deadline = time.time() + 300
    # wait until some proposals (iteration ≥ 1) were evaluated, then kill
    while time.time() < deadline and proc.poll() is None:
        if db.evaluations.count_documents({"campaign": "crash", "iteration": {"$gte": 1}}) >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, (
        "campaign ended before it could be interrupted: " + proc.stderr.read().decode()[-2000:]
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    mid = db.evaluations.count_documents({"campaign": "crash"})
    assert 5 <= mid < cfg.budget
    done = subprocess.run(aso, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    state = CampaignState.load(get_db(cfg.store_spec()), "crash")
    n_eval, n_spectra, n_unique = _counts(state)
    assert state.n_used() == cfg.budget
    assert n_eval == n_unique == cfg.budget
    assert n_spectra == cfg.budget
