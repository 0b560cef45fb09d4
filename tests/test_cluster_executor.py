"""The offline Slurm executor on a real Slurm cluster, with real FireWorks and real jobflow flows.

The tests marked ``slurm`` need the testbed of ``tests/slurm_fixtures.py`` (root, slurm-wlm, munge); the
others check the shipped templates, the LaunchPad loader and the job-side launcher without Slurm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from itertools import combinations
from pathlib import Path

import pytest
from jobflow import Flow, JobConfig, JobStore
from maggma.stores import MemoryStore

from aso_workflows.cluster.launchpad import load_launchpad
from aso_workflows.cluster.offline import SlurmOfflineExecutor, slurm_records
from aso_workflows.cluster.queues import load_queue_adapter, render_script, slurm_queue
from aso_workflows.errors import InputError
from aso_workflows.jobstore import shared_job_store
from aso_workflows.testing.launchpad import mongomock_launchpad
from aso_workflows.testing.probe import fail, probe, probe_flow

ROOT = Path(__file__).resolve().parents[1]
MONGO_URI = os.environ.get("ASO_TEST_MONGODB_URI")


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(
    params=[
        "mongomock",
        pytest.param(
            "mongodb",
            marks=[
                pytest.mark.mongodb,
                pytest.mark.skipif(
                    not MONGO_URI, reason="set ASO_TEST_MONGODB_URI to run against a real MongoDB"
                ),
            ],
        ),
    ]
)
def backend(request, tmp_path):
    """(LaunchPad, JobStore): in-process mongomock + MontyStore on disk, or both on a real MongoDB."""
    if request.param == "mongomock":
        yield mongomock_launchpad(), shared_job_store(tmp_path / "store")
        return
    database = f"aso_test_{uuid.uuid4().hex[:10]}"
    lp = load_launchpad(MONGO_URI, database=database)
    lp.reset("", require_password=False)
    store = shared_job_store(MONGO_URI, database=database)
    try:
        yield lp, store
    finally:
        lp.connection.drop_database(database)


def _outputs(store: JobStore) -> list[dict]:
    store.connect()
    return list(store.query({}, properties=["name", "uuid", "output", "metadata"]))


# ---- the probe flow end to end ----------------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.slow
def test_probe_flow_runs_as_slurm_jobs(slurm_testbed, slurm_queues, backend, tmp_path):
    lp, store = backend
    executor = SlurmOfflineExecutor(
        lp, tmp_path / "launches", slurm_queues, job_store=store, timeout=240, cancel_on_timeout=True
    )
    summary = executor.run(probe_flow(n=3, sleep=3.0))

    # (d) the FireWorks workflow completed, every Firework of it
    assert not summary.timed_out
    assert summary.workflow_state == "COMPLETED"
    assert set(summary.fw_states.values()) == {"COMPLETED"}
    assert all(rec.state == "COMPLETED" and rec.error is None for rec in summary.launches)

    docs = _outputs(store)
    probes = {d["output"]["label"]: d for d in docs if d["name"] == "probe"}
    assert set(probes) == {"fan-0", "fan-1", "fan-2", "added"}

    # (a) the fan-out ran as 3 Slurm jobs of their own, at least two at the same time
    fan = [probes[f"fan-{i}"]["output"] for i in range(3)]
    assert len({o["slurm_job_id"] for o in fan}) == 3
    assert None not in {o["slurm_job_id"] for o in fan}
    overlaps = [(a, b) for a, b in combinations(fan, 2) if a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlaps, f"no two fan-out jobs overlapped: {[(o['start'], o['end']) for o in fan]}"

    # (b) the GPU-tagged job ran on partition gpu, with the GPU Slurm gave it
    train = next(d for d in docs if d["name"] == "train")["output"]
    assert train["partition"] == "gpu" and train["gpus"] is not None
    assert train["n_inputs"] == 3  # the fan-out's list of outputs reached it
    jobcomp = {r.job_id: r for r in slurm_testbed.jobcomp_records()}
    assert jobcomp[train["slurm_job_id"]].partition == "gpu"
    assert [rec.partition for rec in summary.by_name("train")] == ["gpu"]
    cpu_ids = {o["slurm_job_id"] for o in fan} | {probes["added"]["output"]["slurm_job_id"]}
    assert {jobcomp[i].partition for i in cpu_ids} == {"cpu"}

    # (c) the dynamic job appended one more job, which ran too (as its own Slurm job)
    grow = next(d for d in docs if d["name"] == "grow")["output"]
    assert probes["added"]["uuid"] == grow["added_uuid"]
    assert probes["added"]["output"]["n_inputs"] == 1
    assert probes["added"]["output"]["slurm_job_id"] not in {grow["slurm_job_id"], train["slurm_job_id"]}

    # (e) the Slurm job ids recorded by the controller agree with the jobs' own and with Slurm's record
    recorded = summary.slurm_job_ids()
    assert len(set(recorded.values())) == len(summary.launches) == len(summary.fw_ids)
    for d in docs:
        if isinstance(d["output"], dict) and "slurm_job_id" in d["output"]:
            assert recorded[d["metadata"]["fw_id"]] == d["output"]["slurm_job_id"]
    from_launchpad = slurm_records(lp, summary.fw_ids)
    assert [(r["fw_id"], r["job_id"], r["partition"]) for r in from_launchpad] == [
        (rec.fw_id, rec.slurm_job_id, rec.partition)
        for rec in sorted(summary.launches, key=lambda r: r.launch_id)
    ]
    for rec in summary.launches:
        assert jobcomp[rec.slurm_job_id].state == "COMPLETED"
        assert jobcomp[rec.slurm_job_id].partition == rec.partition
        assert jobcomp[rec.slurm_job_id].nodes == rec.node
        launch = lp.launches.find_one({"launch_id": rec.launch_id})
        assert launch["slurm"]["job_id"] == rec.slurm_job_id
        assert str(next(h["reservation_id"] for h in launch["state_history"] if "reservation_id" in h)) == (
            rec.slurm_job_id
        )
        assert executor.slurm_jobs[rec.fw_id] == [rec.slurm_job_id]


@pytest.mark.slurm
@pytest.mark.filterwarnings("ignore:Some jobs are not connected")
def test_failed_and_lost_jobs_end_the_run(slurm_testbed, slurm_queues, tmp_path):
    """A job that raises is FIZZLED by FireWorks; one whose process dies is found lost; the run ends."""
    lp = mongomock_launchpad()
    store = shared_job_store(tmp_path / "store")
    raises, dies = fail("raise"), fail("exit")
    after = probe("after", inputs=raises.output)  # never runs: its parent failed
    executor = SlurmOfflineExecutor(
        lp,
        tmp_path / "launches",
        slurm_queues,
        job_store=store,
        lost_after=2,
        timeout=120,
        cancel_on_timeout=True,
    )
    summary = executor.run(Flow([raises, dies, after]))

    assert not summary.timed_out
    assert summary.workflow_state == "FIZZLED"
    assert sorted(summary.fw_states.values()) == ["FIZZLED", "FIZZLED", "WAITING"]
    by_uuid = {lp.get_fw_by_id(rec.fw_id).tasks[0]["job"].uuid: rec for rec in summary.launches}
    assert by_uuid[raises.uuid].state == "FIZZLED" and by_uuid[raises.uuid].error is None
    stored = lp.launches.find_one({"launch_id": by_uuid[raises.uuid].launch_id})["action"]["stored_data"]
    assert "probe failure on purpose" in stored["_exception"]["_stacktrace"]
    lost = by_uuid[dies.uuid]
    assert lost.state == "FIZZLED" and lost.slurm_job_id in lost.error
    assert {r.job_id: r.state for r in slurm_testbed.jobcomp_records()}[lost.slurm_job_id] == "FAILED"


@pytest.mark.slurm
def test_a_new_controller_picks_up_jobs_in_flight(slurm_testbed, slurm_queues, tmp_path):
    """A controller that stops (timeout, logout) leaves its jobs running; the next one recovers them."""
    lp = mongomock_launchpad()
    store = shared_job_store(tmp_path / "store")
    first = SlurmOfflineExecutor(lp, tmp_path / "launches", slurm_queues, job_store=store, timeout=0.5)
    stopped = first.run(probe("slow", sleep=4.0))
    assert stopped.timed_out and [r.state for r in stopped.launches] in (["RESERVED"], ["RUNNING"])
    fw_id = stopped.launches[0].fw_id

    second = SlurmOfflineExecutor(lp, tmp_path / "launches", slurm_queues, job_store=store, timeout=120)
    done = second.run_workflow(fw_id)
    assert done.workflow_state == "COMPLETED" and not done.timed_out
    assert [r.slurm_job_id for r in done.launches] == [stopped.launches[0].slurm_job_id]  # not resubmitted
    store.connect()
    assert store.query_one({"name": "probe"})["output"]["slurm_job_id"] == stopped.launches[0].slurm_job_id


# ---- without Slurm ----------------------------------------------------------------------------------
def test_shipped_queue_adapters_render_slurm_scripts(tmp_path):
    cpu = load_queue_adapter(ROOT / "launchpad" / "my_qadapter_cpu.yaml")
    gpu = load_queue_adapter(ROOT / "launchpad" / "my_qadapter_gpu.yaml")
    cpu_script = render_script(cpu, tmp_path, job_name="fw1-sim", account="proj42")
    gpu_script = render_script(
        gpu, tmp_path, job_name="fw2-train", rocket_launch="python -m x singleshot --offline"
    )
    for script in (cpu_script, gpu_script):
        assert "$$" not in script
        assert "# Rendered by FireWorks' CommonAdapter" in script  # comments are not eaten by the renderer
        assert f"#SBATCH --chdir={tmp_path}" in script
        assert "source /path/to/aso-workflows/.venv/bin/activate" in script
    assert "#SBATCH --partition=cpu" in cpu_script and "#SBATCH --account=proj42" in cpu_script
    assert "--gres" not in cpu_script and "rlaunch_shim -l /path/to/my_launchpad.yaml" in cpu_script
    assert "#SBATCH --partition=gpu" in gpu_script and "#SBATCH --gres=gpu:1" in gpu_script
    assert "--account" not in gpu_script  # null fields drop their line
    assert "python -m x singleshot --offline" in gpu_script


def test_shipped_fworkers_route_gpu_jobs():
    from fireworks import FWorker

    cpu = FWorker.from_file(str(ROOT / "launchpad" / "my_fworker_cpu.yaml"))
    gpu = FWorker.from_file(str(ROOT / "launchpad" / "my_fworker_gpu.yaml"))
    assert gpu.query["spec._category"] == "gpu"
    assert cpu.query["spec._category"] == {"$exists": False}  # never takes the GPU job


def test_shipped_launchpad_file_is_a_launchpad():
    from monty.serialization import loadfn

    d = loadfn(ROOT / "launchpad" / "my_launchpad.yaml")
    assert {"host", "port", "name", "username", "password", "authsource", "mongoclient_kwargs"} <= set(d)
    assert d["mongoclient_kwargs"]["tls"] is True
    lp = load_launchpad(ROOT / "launchpad" / "my_launchpad.yaml", check=False)
    assert (lp.name, lp.authsource, lp.mongoclient_kwargs["serverSelectionTimeoutMS"]) == (
        "fireworks",
        "admin",
        5000,
    )


def test_launchpad_errors_are_one_line_without_password(tmp_path):
    with pytest.raises(InputError, match="missing.yaml: launchpad file not found"):
        load_launchpad(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("host: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml: not a readable"):
        load_launchpad(bad)
    with pytest.raises(InputError) as info:
        load_launchpad("mongodb://aso:s3cret-pw@127.0.0.1:9/fw", timeout_ms=300)
    message = str(info.value)
    assert "not reachable" in message and "\n" not in message
    assert "s3cret-pw" not in message and "aso:***@127.0.0.1" in message


def test_executor_refuses_in_memory_job_store_and_unknown_category(tmp_path):
    queues = {"default": slurm_queue("cpu", partition="cpu")}
    with pytest.raises(InputError, match="job_store: MemoryStore"):
        SlurmOfflineExecutor(mongomock_launchpad(), tmp_path, queues, job_store=JobStore(MemoryStore()))
    store = shared_job_store(tmp_path / "store")
    lp = mongomock_launchpad()
    executor = SlurmOfflineExecutor(lp, tmp_path / "launches", queues, job_store=store)
    train = probe("train")
    train.config = JobConfig(manager_config={"_category": "gpu"})
    with pytest.raises(InputError, match=r"queues\['gpu'\].*category 'gpu'"):
        executor.run(train)
    assert lp.fireworks.find_one({})["state"] == "READY"  # nothing reserved or submitted


def test_rlaunch_shim_runs_an_offline_firework(tmp_path):
    """The job side without Slurm: FireWorks' offline rocket needs the zopen shim with current monty."""
    from fireworks import FWorker
    from fireworks.queue.queue_launcher import setup_offline_job
    from jobflow.managers.fireworks import flow_to_workflow

    lp = mongomock_launchpad()
    store = shared_job_store(tmp_path / "store")
    lp.add_wf(flow_to_workflow(probe("offline"), store=store))
    launch_dir = tmp_path / "launch"
    launch_dir.mkdir()
    fw, launch_id = lp.reserve_fw(FWorker(), str(launch_dir))
    cwd = os.getcwd()
    os.chdir(launch_dir)
    try:
        setup_offline_job(lp, fw, launch_id)
    finally:
        os.chdir(cwd)
    run = subprocess.run(
        [sys.executable, "-m", "aso_workflows.cluster.rlaunch_shim", "-s", "singleshot", "--offline"],
        cwd=launch_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "missing 1 required positional argument" not in run.stderr
    lp.recover_offline(launch_id)
    assert lp.get_fw_by_id(fw.fw_id).state == "COMPLETED"
    store.connect()
    assert store.query_one({"name": "probe"})["output"]["label"] == "offline"
