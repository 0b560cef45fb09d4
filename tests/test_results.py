"""The results API (``aso_workflows.results.Campaign``) on real small campaigns, embedded store and mongomock."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure
from results_fixtures import MOCK_URI, copy_to_mongomock

from aso_workflows.errors import InputError
from aso_workflows.results import Campaign, list_campaigns, open_db


@pytest.fixture(scope="module")
def aso(embedded) -> Campaign:
    return Campaign.open(embedded.name, store=embedded.spec.path)


def test_open_by_folder_spec_and_config_file(embedded, aso):
    by_spec = Campaign.open(embedded.name, embedded.spec)
    by_file = Campaign.from_config(embedded.config_path)
    for c in (aso, by_spec, by_file):
        s = c.summary()
        assert (s.name, s.n_used, s.budget, s.status) == (embedded.name, 8, 8, "completed")
        assert s.stop_reason == "budget spent" and s.optimizer == "aso"
        assert s.n_failed == 0 and s.pending == [] and s.iteration >= 1 and s.n_models >= 2
    with pytest.raises(InputError, match=f"no campaign named 'nope'.*{embedded.name}"):
        Campaign.open("nope", store=embedded.spec.path)


def test_best_returns_ranked_structures(aso):
    best = aso.best(3)
    assert [b.rank for b in best] == [1, 2, 3]
    objectives = [b.objective for b in best]
    assert objectives == sorted(objectives)
    history = aso.history()
    assert objectives[0] == pytest.approx(history["objective"].min())
    assert objectives == pytest.approx(sorted(history["objective"])[:3])
    for b in best:
        assert isinstance(b.structure, Structure)
        assert b.structure.composition == aso.state.start.composition
        assert b.status == "completed" and set(b.mse) == {"pdf"}
    assert aso.summary().best_objective == objectives[0]
    assert aso.summary().best_ref == best[0].ref
    with pytest.raises(InputError):
        aso.best(0)


def test_history_is_a_dataframe_in_evaluation_order(aso):
    df = aso.history()
    assert isinstance(df, pd.DataFrame) and len(df) == 8
    assert df["n_simulations"].tolist() == list(range(1, 9))
    assert np.allclose(df["best_objective"], df["objective"].cummin())
    assert list(zip(df["iteration"], df["candidate"], strict=True)) == sorted(
        zip(df["iteration"], df["candidate"], strict=True)
    )
    # the surrogate's prediction is there for exactly the candidates the aso optimizer proposed
    proposed = df["kind"] == "aso"
    assert proposed.sum() >= 2
    assert df.loc[proposed, "predicted_objective"].notna().all()
    assert df.loc[~proposed, "predicted_objective"].isna().all()
    assert (df["mse_pdf"] > 0).all()


def test_structures_per_iteration(aso):
    first = aso.structures(iteration=0)
    assert [s.kind for s in first] == ["start", "initial", "initial", "initial"]
    every = aso.structures()
    assert len(every) == 8 and len({s.ref for s in every}) == 8
    later = [s for s in every if s.iteration > 0]
    assert later and all(s.predicted_objective is not None for s in later)
    assert aso.structures(iteration=99) == []


def test_spectrum_by_every_reference_form(aso):
    best = aso.best(1)[0]
    reference = aso.spectrum("best")
    for ref in (best, best.ref, best.id, best.proposal_id, best.fingerprint, "best:1"):
        assert np.array_equal(aso.spectrum(ref, "pdf").y, reference.y)
    # the spectrum returned is the one that was scored: its objective against the target is the stored one
    total, _ = aso.state.objective.evaluate({"pdf": reference})
    assert total == pytest.approx(best.objective, rel=1e-9)
    start = aso.candidate("start")
    assert start.kind == "start" and start.ref == "0:0"
    assert aso.candidate("best:2").objective == aso.best(2)[1].objective
    assert aso.target().technique == "pdf" and len(aso.target().y) == len(reference.y)
    with pytest.raises(InputError, match="ITERATION:CANDIDATE"):
        aso.spectrum("7:7")
    with pytest.raises(InputError, match="no 'xanes' target"):
        aso.spectrum("best", "xanes")


def test_surrogate_accuracy_per_iteration(aso):
    acc = aso.surrogate_accuracy()
    df = aso.history()
    proposed = df[df["kind"] == "aso"]
    assert acc["iteration"].tolist() == sorted(proposed["iteration"].unique())
    assert acc["n_candidates"].sum() == len(proposed)
    for _, row in acc.iterrows():
        rows = proposed[proposed["iteration"] == row["iteration"]]
        assert row["predicted_mean"] == pytest.approx(rows["predicted_objective"].mean())
        assert row["simulated_mean"] == pytest.approx(rows["objective"].mean())
        assert row["mae"] == pytest.approx((rows["predicted_objective"] - rows["objective"]).abs().mean())
        assert row["model_iteration"] == row["iteration"] - 1
        assert pd.isna(row["rank_correlation"]) == (row["n_candidates"] < 3)  # Spearman needs 3 candidates
        assert row["heldout_mae_pdf"] > 0 and row["n_train"] >= 4
        # a simulated PDF target: pdffit2's model in torch (the prior) predicts it exactly, no residual
        # ensemble is trained, so there is no spread to cover with (coverage None, and the model says why)
        model = aso.state.db.models.find_one(
            {"campaign": aso.name, "iteration": int(row["model_iteration"]), "technique": "pdf"}
        )
        assert model is not None
        if str(model["metrics"].get("residual", "")).startswith("skipped"):
            assert row["coverage_pdf"] is None and row["heldout_mae_pdf"] < 1e-9
        else:
            assert 0 <= row["coverage_pdf"] <= 1


def test_random_campaign_run_on_mongomock(mocked):
    c = Campaign.open(mocked.name, store=MOCK_URI)
    s = c.summary()
    assert (s.n_used, s.budget, s.optimizer, s.status) == (8, 8, "random", "completed")
    assert "mongomock" in s.store
    assert c.history()["predicted_objective"].isna().all()
    assert c.surrogate_accuracy().empty
    names = [r["name"] for r in list_campaigns(open_db(MOCK_URI))]
    assert mocked.name in names
    assert len(c.spectrum("best").y) == len(c.target().y)


def test_same_answers_from_embedded_store_and_mongomock(embedded, aso):
    spec = copy_to_mongomock(embedded.spec, "mongomock://results-copy")
    mock = Campaign.open(embedded.name, spec)
    pd.testing.assert_frame_equal(aso.history(), mock.history())
    pd.testing.assert_frame_equal(aso.surrogate_accuracy(), mock.surrogate_accuracy())
    assert [b.id for b in aso.best(5)] == [b.id for b in mock.best(5)]
    a, m = aso.summary().to_dict(), mock.summary().to_dict()
    assert a.pop("store") != m.pop("store")
    assert a == m
    assert np.array_equal(aso.spectrum("2:1").y, mock.spectrum("2:1").y)
    assert [s.ref for s in aso.structures(iteration=1)] == [s.ref for s in mock.structures(iteration=1)]


def test_failed_and_pending_candidates_are_reported(embedded):
    """A failed simulation (recorded by the real record_evaluation) and a queued candidate show up."""
    from aso_workflows.campaign.evaluate import record_evaluation
    from aso_workflows.campaign.state import CampaignState

    spec = copy_to_mongomock(embedded.spec, "mongomock://results-faults")
    c = Campaign.open(embedded.name, spec)
    state = CampaignState.load(c.db, c.name)
    rng = np.random.default_rng(0)
    items = []
    for _ in range(2):
        start = state.start
        moved = start.cart_coords + rng.normal(0, 0.05, (len(start), 3))
        s = Structure(start.lattice, start.species, moved, coords_are_cartesian=True)
        items.append({"structure": s, "kind": "aso"})
    pids = state.add_proposals(3, items)
    failure = {
        "status": "failed",
        "error": "SimulationError: FEFF exited with code 139",
        "failure_kind": "simulator_error",
        "provenance": {"host": "node7", "slurm_job_id": "4242"},
    }
    record_evaluation(state, pids[0], {"pdf": failure})

    s = c.summary()
    assert s.n_used == 8 and s.n_failed == 1 and s.iteration == 3
    (f,) = s.failures
    assert f["ref"] == "3:0" and f["status"] == "failed" and "code 139" in f["error"]
    assert f["host"] == "node7" and f["slurm_job_id"] == "4242"
    assert sum(s.failures_by_kind.values()) == 1
    assert [p["ref"] for p in s.pending] == ["3:1"]
    df = c.history()
    assert len(df) == 9 and df.iloc[-1]["status"] == "failed" and "code 139" in df.iloc[-1]["error"]
    assert c.best(1)[0].objective == pytest.approx(df["objective"].min())
    with pytest.raises(InputError, match="has no spectra"):
        c.spectra("3:0")


def _doc_blocks() -> list[tuple[str, str]]:
    """The runnable pymongo blocks of docs/results.md: (first line, code)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    blocks = re.findall(r"```python\n(# db, name:.*?)```", text, flags=re.S)
    return [(b.splitlines()[0], b) for b in blocks]


def test_documented_queries_run_on_mongomock_and_the_embedded_store(embedded, tmp_path, monkeypatch):
    """Every pymongo query of docs/results.md runs and answers like the Python API does."""
    from montydb import MontyClient

    blocks = _doc_blocks()
    assert len(blocks) >= 8
    spec = copy_to_mongomock(embedded.spec, "mongomock://results-docs")
    c = Campaign.open(embedded.name, spec)
    monkeypatch.chdir(tmp_path)  # the CIF example writes best_01.cif ... here
    answers = {}
    for first, code in blocks:
        scope = {"db": c.db.db, "name": c.name}
        exec(compile(code, "docs/results.md", "exec"), scope)  # noqa: S102 - the documentation's own examples
        answers[first] = scope
    best_cif = Structure.from_file(tmp_path / "best_01.cif")
    assert best_cif.composition == c.best(1)[0].structure.composition
    (acc,) = [v for k, v in answers.items() if "surrogate accuracy" in k]
    simulated = sorted(r["simulated"] for r in acc["accuracy"])
    proposed = c.history().query("kind == 'aso'")
    assert simulated == pytest.approx(sorted(proposed["objective"]))
    (per_it,) = [v for k, v in answers.items() if "best mismatch per iteration" in k]
    assert [r["_id"] for r in per_it["per_iteration"]] == sorted(c.history()["iteration"].unique())
    # the ones marked for the embedded store run on montydb as written
    monty = MontyClient(str(Path(embedded.spec.path) / "db"))["aso"]
    for _, code in blocks:
        if "embedded store too" in code:
            exec(compile(code, "docs/results.md", "exec"), {"db": monty, "name": c.name})  # noqa: S102


def test_open_from_aso_store_variable(embedded, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="give the campaign YAML file or --store"):
        Campaign.open(embedded.name)
    monkeypatch.setenv("ASO_STORE", embedded.spec.path)
    assert Campaign.open(embedded.name).summary().n_used == 8


MONGODB_URI = os.environ.get("ASO_TEST_MONGODB_URI")


@pytest.mark.mongodb
@pytest.mark.skipif(not MONGODB_URI, reason="needs a MongoDB server: set ASO_TEST_MONGODB_URI=mongodb://...")
def test_same_answers_on_a_real_mongodb(embedded, aso, monkeypatch, tmp_path):
    """The campaign copied into a real MongoDB database answers like the embedded store (then dropped)."""
    import pymongo
    import pymongo.errors
    from results_fixtures import copy_store

    from aso_workflows.store import StoreSpec

    monkeypatch.chdir(tmp_path)  # the documented CIF example writes files
    database = f"aso_results_test_{os.getpid()}"
    spec = copy_store(embedded.spec, StoreSpec(kind="mongodb", uri=MONGODB_URI, database=database))
    try:
        remote = Campaign.open(embedded.name, spec)
        pd.testing.assert_frame_equal(aso.history(), remote.history())
        pd.testing.assert_frame_equal(aso.surrogate_accuracy(), remote.surrogate_accuracy())
        assert [b.id for b in aso.best(5)] == [b.id for b in remote.best(5)]
        # FerretDB 1.x (the CI's server) has no $lookup stage and no $first/$min accumulators: the blocks
        # documented as "(MongoDB)" that use them are refused with NotImplemented (code 238), the others run
        ferret = "ferretdbVersion" in remote.db.db.client.admin.command("buildInfo")
        refused = {}
        for first, code in _doc_blocks():
            try:
                exec(compile(code, "docs/results.md", "exec"), {"db": remote.db.db, "name": remote.name})  # noqa: S102
            except pymongo.errors.OperationFailure as exc:
                if not (ferret and exc.code == 238 and "(MongoDB)" in first):
                    raise
                assert exc.details is not None
                refused[first] = str(exc.details.get("errmsg"))
        expected = {"failures counted by kind", "best mismatch per iteration", "surrogate accuracy"}
        assert {k for k in expected if any(k in first for first in refused)} == (
            expected if ferret else set()
        )
        assert len(refused) == (len(expected) if ferret else 0), refused
    finally:
        pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=5000).drop_database(database)
