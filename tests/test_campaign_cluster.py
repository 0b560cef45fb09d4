"""A whole campaign on a real Slurm cluster through FireWorks (offline controller), state in the store.

Every simulation runs in a Slurm job on partition ``cpu``, the training and the proposal of an iteration
back to back in one Slurm job on partition ``gpu`` (the proposal is handed over to the training's job).
The LaunchPad is in-process mongomock (or a real MongoDB when ASO_TEST_MONGODB_URI is set); the campaign
store is the embedded store on disk (or that MongoDB), opened by each job itself.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from itertools import combinations
from pathlib import Path

import pytest
from campaign_files import campaign_yaml

from aso_workflows.cluster.launchpad import load_launchpad
from aso_workflows.cluster.runner import ClusterCampaignRunner
from aso_workflows.config import load_config
from aso_workflows.jobstore import shared_job_store
from aso_workflows.testing.launchpad import mongomock_launchpad

EXAMPLE = Path(__file__).parents[1] / "examples" / "linio2_jt_pdf"
MONGO_URI = os.environ.get("ASO_TEST_MONGODB_URI")

pytestmark = pytest.mark.slurm


@pytest.fixture(
    params=[
        "embedded",
        pytest.param(
            "mongodb",
            marks=[pytest.mark.mongodb, pytest.mark.skipif(not MONGO_URI, reason="set ASO_TEST_MONGODB_URI")],
        ),
    ]
)
def stores(request, tmp_path):
    """(LaunchPad, JobStore, campaign store section of the YAML)."""
    if request.param == "embedded":
        yield mongomock_launchpad(), shared_job_store(tmp_path / "jobstore"), {"kind": "embedded"}
        return
    assert MONGO_URI is not None  # (the mongodb parameter is skipped without it)
    database = f"aso_test_{uuid.uuid4().hex[:10]}"
    lp = load_launchpad(MONGO_URI, database=database)
    lp.reset("", require_password=False)
    try:
        yield (
            lp,
            shared_job_store(MONGO_URI, database=database),
            {"kind": "mongodb", "uri": MONGO_URI, "database": database},
        )
    finally:
        lp.connection.drop_database(database)


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_pdf_campaign_runs_as_slurm_jobs(slurm_testbed, slurm_queues, stores, tmp_path):
    lp, job_store, store_cfg = stores
    surrogate = {"n_models": 2, "hidden": 16, "n_layers": 2, "n_rbf": 16, "epochs": 20, "patience": 5}
    # budget 8: start + 3 initial, then 2 iterations of q = 2
    path = campaign_yaml(tmp_path, "slurm-pdf", budget=8, surrogate=surrogate, store=store_cfg)
    cfg = load_config(path)
    runner = ClusterCampaignRunner(
        launchpad=lp, launch_dir=tmp_path / "launches", queues=slurm_queues, job_store=job_store, timeout=900
    )
    state, summary = runner.run(cfg)
    assert summary.workflow_state == "COMPLETED", summary.as_dict()
    assert state.doc["status"] == "completed"
    assert state.n_used() == cfg.budget
    evals = state.evaluations()
    assert len(evals) == len({e["fingerprint"] for e in evals}) == cfg.budget

    jobcomp = {r.job_id: r for r in slurm_testbed.jobcomp_records()}
    launched = {r.slurm_job_id: r for r in summary.launches}
    # every evaluation ran in a Slurm job on cpu (its own, or the job of the Firework that made it READY:
    # the start job goes on with one initial candidate); provenance names the job and the Firework
    eval_jobs = []
    for e in evals:
        prov = e["provenance"]["pdf"]
        job_id = prov["slurm_job_id"]
        assert job_id in launched and launched[job_id].fw_id == prov["fw_id"]
        assert jobcomp[job_id].partition == "cpu" and jobcomp[job_id].state == "COMPLETED"
        assert prov["slurm_partition"] == "cpu"
        eval_jobs.append(jobcomp[job_id])
    handed = [r for r in summary.launches if r.chained and "/ cand " in r.name]
    assert len({j.job_id for j in eval_jobs}) >= cfg.budget - len(handed)
    overlaps = [
        (a.job_id, b.job_id)
        for a, b in combinations(eval_jobs, 2)
        if _t(a.start) < _t(b.end) and _t(b.start) < _t(a.end)
    ]
    assert overlaps, "no two simulations ran at the same time"
    # training ran on the gpu partition, once per iteration
    models = list(state.db.models.find({"campaign": "slurm-pdf"}))
    assert sorted(m["iteration"] for m in models) == [0, 1, 2]
    for m in models:
        job_id = m["provenance"]["slurm_job_id"]
        assert jobcomp[job_id].partition == "gpu" and m["provenance"]["slurm_partition"] == "gpu"
        assert m["provenance"]["fw_id"] == launched[job_id].fw_id  # added by the controller
    # proposals came from propose jobs (Slurm) and carry predictions
    proposals = [p for p in state.proposals() if p["iteration"] > 0]
    assert len(proposals) == 4 and all(p["predicted"] for p in proposals)
    names = [r.name for r in summary.launches]
    assert any(n.endswith("/ train") for n in names) and any(n.endswith("/ propose") for n in names)
    # each proposal ran in its iteration's training job, right after the training
    for it in range(3):
        (train,) = summary.by_name(f"slurm-pdf / it {it} / train")
        propose = summary.by_name(f"slurm-pdf / it {it} / propose")
        assert [(r.slurm_job_id, r.chained, r.partition) for r in propose] == [
            (train.slurm_job_id, True, "gpu")
        ]
    assert all(r.state == "COMPLETED" for r in summary.launches)
    from aso_workflows.report import write_outputs  # what aso submit writes after the runner

    write_outputs(state, cfg.output_dir)
    assert (Path(cfg.output_dir) / "report.png").is_file()
