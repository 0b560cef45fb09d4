"""The offline Slurm executor on a real Slurm cluster, with real FireWorks and real jobflow flows.

The tests marked ``slurm`` need the testbed of ``tests/slurm_fixtures.py`` (root, slurm-wlm, munge); the
others check the shipped templates, the LaunchPad loader and the job-side launcher without Slurm.
"""

from __future__ import annotations

import contextlib
import logging
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
    assert MONGO_URI is not None  # (the mongodb parameter is skipped without it)
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
def test_probe_flow_runs_as_slurm_jobs(slurm_testbed, slurm_queues, backend, tmp_path, caplog):
    lp, store = backend
    executor = SlurmOfflineExecutor(
        lp,
        tmp_path / "launches",
        slurm_queues,
        job_store=store,
        timeout=240,
        cancel_on_timeout=True,
        squeue_interval=1.0,
    )
    with caplog.at_level(logging.INFO, logger="aso_workflows.cluster.offline"):
        summary = executor.run(probe_flow(n=3, sleep=3.0))

    # (d) the FireWorks workflow completed, every Firework of it
    assert not summary.timed_out
    assert summary.workflow_state == "COMPLETED"
    assert set(summary.fw_states.values()) == {"COMPLETED"}
    assert all(rec.state == "COMPLETED" and rec.error is None for rec in summary.launches)

    docs = _outputs(store)
    probes = {d["output"]["label"]: d for d in docs if d["name"] == "probe"}
    assert set(probes) == {"fan-0", "fan-1", "fan-2", "added"}

    # (a) the fan-out ran as 3 Slurm jobs, at least two at the same time (one of them is the job of
    # fan_out itself: the probe that became READY when fan_out ended was handed over to it)
    fan = [probes[f"fan-{i}"]["output"] for i in range(3)]
    assert len({o["slurm_job_id"] for o in fan}) == 3
    assert None not in {o["slurm_job_id"] for o in fan}
    # Slurm's own record of the jobs (start/end to the second): the jobs overlap whatever their
    # Python start-up costs on a loaded machine
    jobcomp = {r.job_id: r for r in slurm_testbed.jobcomp_records()}
    spans = [(jobcomp[o["slurm_job_id"]].start, jobcomp[o["slurm_job_id"]].end) for o in fan]
    overlaps = [(a, b) for a, b in combinations(spans, 2) if a[0] < b[1] and b[0] < a[1]]
    assert overlaps, f"no two fan-out jobs overlapped: {spans}"

    # (b) the GPU-tagged job ran on partition gpu, with the GPU Slurm gave it
    train = next(d for d in docs if d["name"] == "train")["output"]
    assert train["partition"] == "gpu" and train["gpus"] is not None
    assert train["n_inputs"] == 3  # the fan-out's list of outputs reached it
    assert jobcomp[train["slurm_job_id"]].partition == "gpu"
    assert [rec.partition for rec in summary.by_name("train")] == ["gpu"]
    cpu_ids = {o["slurm_job_id"] for o in fan} | {probes["added"]["output"]["slurm_job_id"]}
    assert {jobcomp[i].partition for i in cpu_ids} == {"cpu"}

    # (c) the dynamic job appended one more job, which ran too: handed over to the Slurm job (and the
    # process) of grow, the job that made it READY, on the same queue
    grow = next(d for d in docs if d["name"] == "grow")["output"]
    assert probes["added"]["uuid"] == grow["added_uuid"]
    assert probes["added"]["output"]["n_inputs"] == 1
    added = probes["added"]["output"]
    assert (added["slurm_job_id"], added["pid"]) == (grow["slurm_job_id"], grow["pid"])
    assert added["slurm_job_id"] != train["slurm_job_id"]

    # (e) the Slurm job ids recorded by the controller agree with the jobs' own and with Slurm's record;
    # a launch handed over shares its job with the launch before it, every other one has its own job
    recorded = summary.slurm_job_ids()
    chained = [r for r in summary.launches if r.chained]
    assert len(summary.launches) == len(summary.fw_ids)
    # e.g. "added" in grow's job, and in fan_out's job what its replacement made READY first; each
    # launch handed over went to a job of its own queue. The job started in advance for the GPU-tagged
    # "train" (a standby job, see cluster/handover.py) held one of the node's 2 CPUs while two probes
    # waited for resources: it was cancelled and the training got a job of its own
    # (test_a_standby_job_takes_the_training covers the case where it fits)
    assert grow["slurm_job_id"] in {r.slurm_job_id for r in chained}
    first = {r.slurm_job_id: r for r in summary.launches if not r.chained}
    assert all(r.slurm_job_id in first for r in chained)
    assert all(first[r.slurm_job_id].category == r.category for r in chained)
    assert any("standby job" in m and "cancelled" in m for m in caplog.messages), caplog.messages
    assert len(set(recorded.values())) == len(summary.launches) - len(chained)
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
def test_a_standby_job_takes_the_training(slurm_testbed, slurm_queues, tmp_path):
    """While one probe runs (1 of the node's 2 CPUs), the GPU training is started in advance (a standby
    job) and handed the training when the probe ends: one job fewer to wait for."""
    lp = mongomock_launchpad()
    store = shared_job_store(tmp_path / "store")
    executor = SlurmOfflineExecutor(lp, tmp_path / "launches", slurm_queues, job_store=store, timeout=180)
    summary = executor.run(probe_flow(n=1, sleep=3.0))

    assert not summary.timed_out and summary.workflow_state == "COMPLETED"
    first = {r.slurm_job_id for r in summary.launches if not r.chained}
    standby = [r for r in summary.launches if r.chained and r.slurm_job_id not in first]
    assert [r.name for r in standby] == ["train"]
    assert standby[0].job_home is not None and Path(standby[0].job_home).name.endswith("-standby")
    assert standby[0].partition == "gpu"


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
    assert lost.state == "FIZZLED" and lost.error is not None and lost.slurm_job_id in lost.error
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
    probe_doc = store.query_one({"name": "probe"})
    assert probe_doc is not None
    assert probe_doc["output"]["slurm_job_id"] == stopped.launches[0].slurm_job_id


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
    from jobflow.managers.fireworks import flow_to_workflow

    lp = mongomock_launchpad()
    store = shared_job_store(tmp_path / "store")
    lp.add_wf(flow_to_workflow(probe("offline"), store=store))
    launch_dir, launch_id = _prepare_offline(lp, tmp_path / "launch")
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
    assert lp.get_fw_by_id(1).state == "COMPLETED"
    store.connect()
    probe_doc = store.query_one({"name": "probe"})
    assert probe_doc is not None and probe_doc["output"]["label"] == "offline"


def _prepare_offline(lp, folder: Path) -> tuple[Path, int]:
    """Reserve a READY Firework into ``folder`` as the offline controller does (FW.json, FW_offline.json)."""
    from fireworks import FWorker
    from fireworks.queue.queue_launcher import setup_offline_job

    folder.mkdir()
    fw, launch_id = lp.reserve_fw(FWorker(), str(folder))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        setup_offline_job(lp, fw, launch_id)
    finally:
        os.chdir(cwd)
    return folder, launch_id


def _wait_for_result(launch_dir: Path, job: subprocess.Popen, timeout: float = 120) -> None:
    import json
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if "fwaction" in json.loads((launch_dir / "FW_offline.json").read_text()):
                return
        assert job.poll() is None, job.communicate()[1][-2000:]
        time.sleep(0.05)
    pytest.fail(f"no result in {launch_dir} within {timeout} s")


@pytest.mark.filterwarnings("ignore:Some jobs are not connected")
def test_a_job_runs_the_fireworks_handed_over_to_it_until_told_to_stop(tmp_path):
    """``rlaunch_shim rapidfire --offline``: its own Firework, then each one the controller hands over, in
    the same process; it ends at once when told to stop, or after ``linger`` s without a word."""
    from jobflow.managers.fireworks import flow_to_workflow

    from aso_workflows.cluster.handover import wait_for_handover, write_handover

    lp = mongomock_launchpad()
    store = shared_job_store(tmp_path / "store")
    lp.add_wf(flow_to_workflow(Flow([probe("first"), probe("second")]), store=store))
    home, first = _prepare_offline(lp, tmp_path / "a")
    argv = [
        sys.executable,
        "-m",
        "aso_workflows.cluster.rlaunch_shim",
        "rapidfire",
        "--offline",
        "--linger",
        "60",
    ]
    job = subprocess.Popen(argv, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_result(home, job)
        lp.recover_offline(first)
        nxt, second = _prepare_offline(lp, tmp_path / "b")
        write_handover(home, {"launch_dir": str(nxt)})
        _wait_for_result(nxt, job)
        assert job.poll() is None  # waiting for the controller's word again
        write_handover(home, {"stop": True})
        assert job.wait(timeout=30) == 0
    finally:
        if job.poll() is None:
            job.kill()
    lp.recover_offline(second)
    assert {lp.get_fw_by_id(i).state for i in (1, 2)} == {"COMPLETED"}
    store.connect()
    outputs = {
        d["output"]["label"]: d["output"] for d in store.query({"name": "probe"}, properties=["output"])
    }
    assert outputs["first"]["pid"] == outputs["second"]["pid"] == job.pid  # one process ran both
    assert sorted(p.name for p in home.glob("FW_next.*.json")) == ["FW_next.1.json", "FW_next.2.json"]
    # no word within linger: the job ends by itself
    assert wait_for_handover(home, linger=0.2) is None
