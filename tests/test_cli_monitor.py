"""``aso status``, ``aso results best|history|spectra`` and ``aso report`` through typer's CliRunner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure
from results_fixtures import MOCK_URI, copy_to_mongomock
from typer.testing import CliRunner

from aso_workflows.cli import app
from aso_workflows.results import Campaign

runner = CliRunner()


def aso(*args: str, env: dict | None = None):
    return runner.invoke(app, list(args), env={"COLUMNS": "200", "ASO_STORE": "", **(env or {})})


@pytest.fixture(scope="module")
def faulty(embedded) -> str:
    """A copy of the embedded campaign on mongomock with one failed and one pending candidate."""
    from aso_workflows.campaign.evaluate import record_evaluation
    from aso_workflows.campaign.state import CampaignState

    uri = "mongomock://cli-faults"
    spec = copy_to_mongomock(embedded.spec, uri)
    state = CampaignState.load(Campaign.open(embedded.name, spec).db, embedded.name)
    rng = np.random.default_rng(5)
    items = []
    for _ in range(2):
        moved = state.start.cart_coords + rng.normal(0, 0.05, (len(state.start), 3))
        s = Structure(state.start.lattice, state.start.species, moved, coords_are_cartesian=True)
        items.append({"structure": s, "kind": "aso"})
    pids = state.add_proposals(3, items)
    failed = {
        "status": "failed",
        "error": "SimulationError: pdffit2 refused the structure",
        "failure_kind": "walltime",
        "provenance": {"host": "node3", "slurm_job_id": "77"},
    }
    record_evaluation(state, pids[0], {"pdf": failed})
    return uri


def test_help_lists_the_monitoring_commands():
    res = aso("--help")
    assert res.exit_code == 0
    for name in ("status", "results", "report"):
        assert name in res.output
    res = aso("results", "--help")
    assert all(name in res.output for name in ("best", "history", "spectra"))


def test_status_lists_campaigns_of_a_store(embedded, mocked):
    res = aso("status", "--store", embedded.spec.path)
    assert res.exit_code == 0, res.output
    assert embedded.name in res.output and "8 / 8" in res.output and "budget spent" in res.output
    # the campaign's output folder (holding store/) is accepted too
    rows = json.loads(aso("status", "--store", str(embedded.output), "--json").stdout)
    assert [r["name"] for r in rows] == [embedded.name] and rows[0]["store"].endswith("/store")
    res = aso("status", "--store", MOCK_URI, "--json")
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == [mocked.name] and rows[0]["optimizer"] == "random"
    assert rows[0]["n_used"] == rows[0]["budget"] == 8


def test_status_without_store_lists_the_runs_folders_here(embedded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = aso("status")
    assert res.exit_code == 2 and "no runs/*/store folder here" in res.stderr
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / embedded.name).symlink_to(embedded.output)
    rows = json.loads(aso("status", "--json").stdout)
    assert [r["name"] for r in rows] == [embedded.name]
    # and a campaign by name alone is found in runs/<name>/store
    assert json.loads(aso("status", embedded.name, "--json").stdout)["n_used"] == 8


def test_status_of_one_campaign_by_file_and_by_name(embedded):
    res = aso("status", str(embedded.config_path))
    assert res.exit_code == 0, res.output
    c = Campaign.open(embedded.name, embedded.spec)
    best = c.best(1)[0]
    assert "8 / 8 used, 0 failed, 0 pending" in res.output
    assert f"{best.objective:.4g} (candidate {best.ref})" in res.output
    res = aso("status", embedded.name, "--store", embedded.spec.path, "--json")
    doc = json.loads(res.stdout)
    assert (
        doc["best_objective"] == best.objective and doc["start_objective"] == c.candidate("start").objective
    )
    assert doc["stop_reason"] == "budget spent" and doc["failures"] == [] and doc["pending"] == []


def test_status_shows_failures_with_reasons_and_pending(embedded, faulty):
    res = aso("status", embedded.name, "--store", faulty)
    assert res.exit_code == 0, res.output
    assert "1 failed, 1 pending" in res.output
    assert "pdffit2 refused the structure" in res.output and "node3" in res.output
    assert "walltime 1" in res.output
    assert "3:0" in res.output and "3:1" in res.output
    doc = json.loads(aso("status", embedded.name, "--store", faulty, "--json").stdout)
    assert doc["n_failed"] == 1 and doc["failures"][0]["slurm_job_id"] == "77"
    assert doc["failures"][0]["failure_kind"] == "walltime"
    assert [p["ref"] for p in doc["pending"]] == ["3:1"]


def test_status_counts_the_campaigns_fireworks(embedded, tmp_path, monkeypatch):
    from fireworks import Firework, FWorker, ScriptTask, Workflow

    from aso_workflows.cluster import launchpad as lp_module
    from aso_workflows.commands.status import fireworks_counts
    from aso_workflows.testing.launchpad import mongomock_launchpad

    lp = mongomock_launchpad()
    name = embedded.name

    def fw(label):
        return Firework(ScriptTask.from_str("true"), name=f"{name} / {label}")

    a, b, c, d = fw("it 0 / simulate 0"), fw("it 0 / simulate 1"), fw("it 0 / simulate 2"), fw("it 0 / train")
    lp.add_wf(Workflow([a, b, c, d], {a: [d]}, name=name))
    a, b, c, d = (x.fw_id for x in (a, b, c, d))  # add_wf renumbers the Fireworks in place
    lp.add_wf(Workflow([fw("other")], name=f"{name} (from iteration 1)"))
    lp.add_wf(Workflow([Firework(ScriptTask.from_str("true"), name="x")], name=f"{name}-other"))
    _, launch = lp.checkout_fw(FWorker(), str(tmp_path), fw_id=a)
    lp.mark_fizzled(launch)
    lp.checkout_fw(FWorker(), str(tmp_path), fw_id=b)
    lp.reserve_fw(FWorker(), str(tmp_path), fw_id=c)

    counts = fireworks_counts(lp, name)
    assert counts["workflows"] == 2
    assert counts["states"] == {"RUNNING": 1, "RESERVED": 1, "READY": 1, "WAITING": 1, "FIZZLED": 1}
    assert {(f["state"], f["fw_id"]) for f in counts["fireworks"]} == {
        ("FIZZLED", a),
        ("RUNNING", b),
        ("RESERVED", c),
    }

    # through the command: the LaunchPad is the in-process one above (no MongoDB server can run here)
    monkeypatch.setattr(lp_module, "load_launchpad", lambda *_a, **_k: lp)
    res = aso("status", str(embedded.config_path), "--launchpad", "my_launchpad.yaml")
    assert res.exit_code == 0, res.output
    assert "FIZZLED" in res.output and f"{name} / it 0 / simulate 0" in res.output
    doc = json.loads(aso("status", str(embedded.config_path), "-l", "lp.yaml", "--json").stdout)
    assert doc["fireworks"]["states"]["RUNNING"] == 1


def test_status_bad_launchpad_and_unknown_campaign_are_one_line_errors(embedded, tmp_path):
    res = aso("status", str(embedded.config_path), "--launchpad", str(tmp_path / "none.yaml"))
    assert res.exit_code == 2 and "launchpad file not found" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = aso("status", "no-such", "--store", embedded.spec.path)
    assert res.exit_code == 2 and "no campaign named 'no-such'" in res.stderr and embedded.name in res.stderr
    res = aso("status", "--store", str(tmp_path / "missing"))
    assert res.exit_code == 2 and "no embedded store folder" in res.stderr
    # a campaign file that never ran: one line, and no empty store is created by looking
    text = embedded.config_path.read_text().replace(str(embedded.output), str(tmp_path / "never"))
    (tmp_path / "never.yaml").write_text(text.replace(f"name: {embedded.name}", "name: never"))
    res = aso("status", str(tmp_path / "never.yaml"))
    assert res.exit_code == 2 and "has the campaign been run?" in res.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.filterwarnings("ignore:Issues encountered while parsing CIF")  # pymatgen rounds 1/3 on reading
def test_results_best_writes_cifs_and_json(embedded, tmp_path):
    res = aso("results", "best", str(embedded.config_path), "-n", "3", "--cif", str(tmp_path / "cif"))
    assert res.exit_code == 0, res.output
    best = Campaign.open(embedded.name, embedded.spec).best(3)
    for b in best:
        assert b.ref in res.output
        cif = Structure.from_file(tmp_path / "cif" / f"best_{b.rank:02d}.cif")
        assert cif.composition == b.structure.composition
        assert np.allclose(cif.lattice.abc, b.structure.lattice.abc, atol=1e-4)
    rows = json.loads(aso("results", "best", embedded.name, "--store", embedded.spec.path, "--json").stdout)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["objective"] for r in rows] == sorted(r["objective"] for r in rows)
    assert rows[0]["objective"] == best[0].objective and "structure" not in rows[0]
    with_structure = json.loads(
        aso(
            "results",
            "best",
            embedded.name,
            "--store",
            embedded.spec.path,
            "-n",
            "1",
            "--json",
            "--structures",
        ).stdout
    )
    assert Structure.from_dict(with_structure[0]["structure"]) == best[0].structure


def test_results_history_csv_and_json(embedded, tmp_path):
    out = tmp_path / "h.csv"
    res = aso("results", "history", str(embedded.config_path), "--csv", str(out))
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8 and [int(r["n_simulations"]) for r in rows] == list(range(1, 9))
    records = json.loads(aso("results", "history", str(embedded.config_path), "--json", "--last", "3").stdout)
    assert [r["n_simulations"] for r in records] == [6, 7, 8]
    assert all(r["predicted_objective"] is None or r["kind"] == "aso" for r in records)


def test_results_history_on_mongomock_random(mocked):
    records = json.loads(aso("results", "history", mocked.name, "--store", MOCK_URI, "--json").stdout)
    assert len(records) == 8 and all(r["predicted_objective"] is None for r in records)


def test_results_spectra_table_csv_plot_json(embedded, tmp_path):
    c = Campaign.open(embedded.name, embedded.spec)
    best = c.best(1)[0]
    res = aso(
        "results", "spectra", str(embedded.config_path), "--candidate", best.ref,
        "--csv", str(tmp_path / "s.csv"), "--plot", str(tmp_path / "s.png"),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "pdf" in res.output and "900" in res.output and f"{best.mse['pdf']:.4g}" in res.output
    data = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    assert data.shape == (900, 3)
    assert np.allclose(data[:, 2], c.spectrum(best).y) and np.allclose(data[:, 1], c.target().y)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(aso("results", "spectra", str(embedded.config_path), "-c", "start", "--json").stdout)
    assert doc["candidate"]["kind"] == "start" and len(doc["spectra"]["pdf"]["values"]) == 900
    res = aso("results", "spectra", str(embedded.config_path), "--candidate", "42:0")
    assert res.exit_code == 2 and "ITERATION:CANDIDATE" in res.stderr


def test_report_command(embedded, mocked, tmp_path, monkeypatch):
    res = aso("report", str(embedded.config_path), "-o", str(tmp_path / "rep"), "-n", "2")
    assert res.exit_code == 0, res.output
    html = tmp_path / "rep" / "report.html"
    assert html.is_file() and str(html) in res.output
    assert (tmp_path / "rep" / "report_surrogate.png").is_file() and (
        tmp_path / "rep" / "best_02.cif"
    ).is_file()
    monkeypatch.chdir(tmp_path)  # by name, without -o: runs/<name> here
    paths = json.loads(aso("report", mocked.name, "--store", MOCK_URI, "--json").stdout)
    assert paths["report_html"] == str((tmp_path / "runs" / mocked.name / "report.html").resolve())
    assert "surrogate_png" not in paths and all(Path(p).is_file() for p in paths.values())
