"""The users' story, end to end, as separate processes on the real Slurm testbed and a real MongoDB server.

- process A: ``aso submit campaign.yaml --launchpad my_launchpad.yaml`` (campaign store on the server);
- process B, while A runs: ``aso webgui -l my_launchpad.yaml``, its pages loaded in headless Chromium;
- process C, while A runs: ``aso status``, ``aso results best``, the pymongo blocks of ``docs/results.md``
  and its mongosh queries, all against the same server;
- online mode: ``qlaunch rapidfire`` with ``rlaunch`` workers that talk to the server from Slurm jobs;
- reliability: the controller killed mid-campaign (``aso resume`` reattaches to the surviving workflow
  through the LaunchPad ``aso submit`` recorded) and the server stopped and restarted under the resumed
  controller (it waits, then carries on): nothing lost or duplicated.

The same steps as a walk-through a person can paste: ``docs/cluster.md`` ("Trying it on one machine").
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from campaign_files import TINY_SURROGATE, campaign_yaml
from mongodb_fixtures import launchpad_yaml, mongo_client, mongosh_path

from aso_workflows.cluster.queues import TEMPLATES_DIR

pytestmark = [pytest.mark.slurm, pytest.mark.mongodb]

REPO = Path(__file__).resolve().parents[1]
ASO = [str(Path(sys.executable).parent / "aso")]
QLAUNCH = str(Path(sys.executable).parent / "qlaunch")
ARTIFACTS = REPO / "test-artifacts" / "story"
BUDGET = 7  # start + 2 initial structures in iteration 0, then 2 iterations of q = 2


# ---- the site's files: launchpad, queues, workers, campaign --------------------------------------------------
@dataclass
class Site:
    folder: Path
    launchpad: Path
    uri: str  # with the password (the test reads the store through it)
    store_database: str
    env: dict

    def campaign(self, name: str, **fields) -> Path:
        """A PDF campaign whose store is on the server: user-only URI plus a password file."""
        parts = urlsplit(self.uri)
        (self.folder / "store.pw").write_text(unquote(parts.password or "") + "\n")
        (self.folder / "store.pw").chmod(0o600)
        host = parts.netloc.rsplit("@", 1)[-1]
        user_only = parts._replace(netloc=f"{parts.username}@{host}" if parts.username else host).geturl()
        store = {"kind": "mongodb", "uri": user_only, "database": self.store_database}
        if parts.password:
            store["password_file"] = "store.pw"
        doc = {
            "budget": BUDGET,
            "initial_size": 2,
            "batch_size": 2,
            "surrogate": {**TINY_SURROGATE, "epochs": 8},
            "proposal": {"n_starts": 4, "steps": 5, "progress": False},
            "store": store,
            "output": str(self.folder / name),
            **fields,
        }
        return campaign_yaml(self.folder, name, **doc)

    def db(self):
        import pymongo

        return pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=5000)[self.store_database]


def write_site(folder: Path, uri: str, fw_database: str, store_database: str, env: dict) -> Site:
    """``my_launchpad.yaml``, ``my_qadapter_{cpu,gpu}.yaml``, ``my_fworker_{cpu,gpu}.yaml`` for the testbed."""
    folder.mkdir(parents=True, exist_ok=True)
    lp = launchpad_yaml(folder / "my_launchpad.yaml", uri, fw_database)
    for kind, partition in (("cpu", "cpu"), ("gpu", "gpu")):
        worker = yaml.safe_load((REPO / "launchpad" / f"my_fworker_{kind}.yaml").read_text())
        (folder / f"my_fworker_{kind}.yaml").write_text(yaml.safe_dump(worker))
        queue = {
            "_fw_name": "CommonAdapter",
            "_fw_q_type": "SLURM",
            "_fw_template_file": str(TEMPLATES_DIR / f"slurm_{kind}.sh"),
            # online mode (qlaunch): each Slurm job runs one Firework against the server
            "rocket_launch": f"{sys.executable} -m aso_workflows.cluster.rlaunch_shim -l {lp} "
            f"-w {folder / f'my_fworker_{kind}.yaml'} singleshot",
            "partition": partition,
            "walltime": "00:10:00",
            "nodes": 1,
            "ntasks": 1,
            "cpus_per_task": 1,
            "gres": "gpu:1" if kind == "gpu" else None,
            "pre_rocket": None,
            "post_rocket": None,
        }
        (folder / f"my_qadapter_{kind}.yaml").write_text(yaml.safe_dump(queue))
    return Site(folder=folder, launchpad=lp, uri=uri, store_database=store_database, env=env)


@pytest.fixture
def site(tmp_path, mongodb_uri, fresh_databases, slurm_testbed) -> Site:
    return write_site(
        tmp_path / "site",
        mongodb_uri,
        fresh_databases("story_fw"),
        fresh_databases("story_aso"),
        slurm_testbed.env,
    )


# ---- helpers ---------------------------------------------------------------------------------------------
def start(argv: list[str], site: Site, log: str) -> subprocess.Popen:
    out = open(site.folder / f"{log}.log", "w")  # noqa: SIM115 - the child writes it
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=site.env, cwd=site.folder)


def log_of(site: Site, log: str) -> str:
    return (site.folder / f"{log}.log").read_text(errors="replace")


def wait_for(condition, what: str, timeout: float, alive: subprocess.Popen | None = None, site=None, log=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if alive is not None and alive.poll() is not None:
            pytest.fail(f"{log} ended (rc {alive.returncode}) before {what}: {log_of(site, log)[-3000:]}")
        time.sleep(0.5)
    pytest.fail(
        f"{what}: not within {timeout:.0f} s" + (f"; {log}: {log_of(site, log)[-2000:]}" if log else "")
    )


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def completed_evaluations(site: Site, name: str) -> int:
    return site.db().evaluations.count_documents({"campaign": name, "status": "completed"})


# ---- process C: the documented queries -------------------------------------------------------------------
PYMONGO_BLOCKS = r"""
import json, re, sys
import pymongo
uri, database, name, docs = sys.argv[1:5]
db = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)[database]
text = open(docs).read()
out = {}
for code in re.findall(r"```python\n(# db, name:.*?)```", text, flags=re.S):
    first = code.splitlines()[0]
    scope = {"db": db, "name": name}
    try:
        exec(compile(code, "docs/results.md", "exec"), scope)
        out[first] = "ok"
    except pymongo.errors.OperationFailure as exc:
        out[first] = f"refused {exc.code}: {exc.details.get('errmsg')}"
print(json.dumps(out))
"""


def mongosh_script(name: str) -> tuple[str, list[str]]:
    """The mongosh block of docs/results.md as one script that runs each statement and prints the answers."""
    text = (REPO / "docs" / "results.md").read_text()
    found = re.search(r"```js\n(.*?)```", text, flags=re.S)
    assert found is not None, "docs/results.md has no ```js block"
    block = found.group(1)
    statements, current = [], []
    for line in block.splitlines():
        if line.startswith("const name"):
            continue
        if line.strip().startswith("//") or not line.strip():
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    calls = ",\n".join(f"() => ({s})" for s in statements)
    script = (
        f"const name = {json.dumps(name)};\nconst out = [];\n"
        f"for (const f of [{calls}]) {{\n"
        "  try { const r = f(); out.push({ok: true, docs: typeof r.toArray === 'function' ? r.toArray() : r}); }\n"
        "  catch (e) { out.push({ok: false, error: String(e.codeName || e.message)}); }\n"
        "}\nprint(EJSON.stringify(out, {relaxed: true}));\n"
    )
    return script, statements


def run_mongosh(site: Site, name: str) -> list[tuple[str, dict]]:
    path = mongosh_path()
    if path is None:
        return []
    script, statements = mongosh_script(name)
    js = site.folder / "queries.js"
    js.write_text(script)
    uri = urlsplit(site.uri)._replace(path=f"/{site.store_database}").geturl()
    done = subprocess.run(
        [path, uri, "--quiet", "--norc", "--file", str(js)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    return list(zip(statements, answers, strict=True))


# ---- the story -------------------------------------------------------------------------------------------
def test_users_story_submit_watch_query(site, server_is_ferretdb, fault_ledger):
    """A submits; B (web GUI in Chromium) and C (CLI, pymongo, mongosh) look at it while it runs."""
    from browser import chromium_path, render
    from fault_ledger import store_check

    from aso_workflows.campaign.state import CampaignState, get_db
    from aso_workflows.config import load_config
    from aso_workflows.testing.ferretdb import free_port

    yml = site.campaign("story")
    lp_db = mongo_client(site.uri)[yaml.safe_load(site.launchpad.read_text())["name"]]
    evaluated_query = {"action.stored_data.mismatch": {"$ne": None}, "state": "COMPLETED"}
    a = start([*ASO, "submit", str(yml), "--launchpad", str(site.launchpad)], site, "A-submit")
    b = None
    try:
        wait_for(
            lambda: lp_db.launches.count_documents(evaluated_query) >= 2,
            "two evaluations read back into the LaunchPad",
            600,
            a,
            site,
            "A-submit",
        )
        # ---- process B: the web GUI on the same LaunchPad file -----------------------------------------
        port = free_port()
        b = start([*ASO, "webgui", "-l", str(site.launchpad), "--port", str(port)], site, "B-webgui")
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return get(url + "/")[0] == 200
            except OSError:
                return False

        wait_for(up, "the web GUI answering", 120, b, site, "B-webgui")
        evaluated = lp_db.launches.find_one(evaluated_query, sort=[("launch_id", 1)])
        assert evaluated is not None
        fw = lp_db.fireworks.find_one({"fw_id": evaluated["fw_id"]})
        assert fw is not None
        tag = fw["spec"]["_aso"]
        browse = chromium_path() is not None

        def page(path: str, shot: str) -> str:
            if browse:
                return render(url + path, screenshot=ARTIFACTS / shot, size=(1280, 1400))
            status, body = get(url + path)
            assert status == 200, path
            return body

        home = html.unescape(page("/", "home.png"))
        wf_page = html.unescape(page(f"/wf/{fw['fw_id']}", "workflow.png"))
        fw_page = html.unescape(page(f"/fw/{fw['fw_id']}", "firework.png"))
        live = html.unescape(page("/aso/campaign/story", "campaign_live.png"))
        assert f"story / it {tag['iteration']} / cand {tag['candidate']} / pdf" in home
        mismatch = evaluated["action"]["stored_data"]["mismatch"]
        assert f"mismatch {mismatch:.4g}" in home  # beside the evaluation's name in the list
        assert (
            "story / it 0 / start" in wf_page
            or "story / start" in wf_page
            or "Campaign page: story" in wf_page
        )
        assert 'id="aso-key-numbers"' in fw_page and f"{mismatch:.4g}" in fw_page
        assert "Campaign story" in live and "Best mismatch vs simulations" in live
        running_at_load = a.poll() is None
        # ---- process C: status, results, the documented pymongo and mongosh queries --------------------
        status = subprocess.run(
            [*ASO, "status", str(yml)], capture_output=True, text=True, timeout=120, env=site.env
        )
        assert status.returncode == 0, status.stderr[-2000:]
        assert "story" in status.stdout and f"/ {BUDGET}" in status.stdout
        best = subprocess.run(
            [*ASO, "results", "best", str(yml), "-n", "2", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert best.returncode == 0, best.stderr[-2000:]
        ranked = json.loads(best.stdout)
        ranked = ranked["candidates"] if isinstance(ranked, dict) else ranked
        assert ranked and ranked[0]["objective"] <= ranked[-1]["objective"]
        queries = subprocess.run(
            [
                sys.executable,
                "-c",
                PYMONGO_BLOCKS,
                site.uri,
                site.store_database,
                "story",
                str(REPO / "docs" / "results.md"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=site.folder,  # the CIF example writes best_01.cif ... here
        )
        assert queries.returncode == 0, queries.stderr[-3000:]
        answers = json.loads(queries.stdout.strip().splitlines()[-1])  # the blocks print too
        refused = {k for k, v in answers.items() if v != "ok"}
        assert len(answers) >= 8 and (site.folder / "best_01.cif").is_file()
        if server_is_ferretdb:  # no $lookup, $first, $min in FerretDB 1.x (docs/cluster.md, compatibility)
            assert (
                all("(MongoDB)" in k and "refused 238" in answers[k] for k in refused) and len(refused) == 3
            )
        else:
            assert not refused, answers
        shell = run_mongosh(site, "story")
        if shell:
            ok = [(s, a_) for s, a_ in shell if a_["ok"]]
            failed = [(s, a_["error"]) for s, a_ in shell if not a_["ok"]]
            assert any(doc.get("_id") == "story" for doc in ok[0][1]["docs"]), ok[0]  # campaigns.find
            best5 = next(a_["docs"] for s, a_ in ok if ".limit(5)" in s)
            assert [d["objective"] for d in best5] == sorted(d["objective"] for d in best5) and best5
            expected_refusals = 3 if server_is_ferretdb else 0
            assert len(failed) == expected_refusals and all(e == "NotImplemented" for _, e in failed), failed
        # ---- A ends ---------------------------------------------------------------------------------------
        rc = a.wait(timeout=900)
        out = log_of(site, "A-submit")
        assert rc == 0 and "workflow COMPLETED" in out, out[-3000:]
        done = html.unescape(page("/aso/campaign/story", "campaign_done.png"))
        assert f"{BUDGET} / {BUDGET} used" in done and "http-equiv" not in done
        if running_at_load:
            assert "http-equiv" in live or 'http-equiv="refresh"' in live  # the live page reloads itself
    finally:
        stop(a, signal.SIGKILL)
        if b is not None:
            stop(b)  # gunicorn: graceful stop of its workers
    cfg = load_config(yml)
    state = CampaignState.load(get_db(cfg.store_spec()), "story")
    assert state.doc["status"] == "completed" and state.n_used() == BUDGET
    assert store_check(state) == (0, 0, True)
    evals = state.evaluations()
    assert all(e["provenance"]["pdf"]["slurm_job_id"] for e in evals)  # every simulation was a Slurm job
    assert state.doc["executor"]["launchpad"]["source"] == str(site.launchpad.resolve())  # for aso resume
    assert b.returncode is not None


def test_online_workers_qlaunch_rapidfire(site, fault_ledger):
    """``aso submit --no-wait`` adds the workflow; ``qlaunch rapidfire`` submits Slurm jobs whose ``rlaunch``
    talks to the server (CPU worker for simulations, GPU worker for the training)."""
    from fault_ledger import store_check

    from aso_workflows.campaign.state import CampaignState, get_db
    from aso_workflows.config import load_config

    yml = site.campaign("online")
    added = subprocess.run(
        [*ASO, "submit", str(yml), "--launchpad", str(site.launchpad), "--no-wait"],
        capture_output=True,
        text=True,
        timeout=300,
        env=site.env,
    )
    assert added.returncode == 0 and "start workers with qlaunch rapidfire" in added.stdout, added.stderr[
        -2000:
    ]
    launches = site.folder / "launches-online"
    launches.mkdir()
    workers = []
    for kind in ("cpu", "gpu"):
        argv = [
            QLAUNCH,
            "-l", str(site.launchpad),
            "-w", str(site.folder / f"my_fworker_{kind}.yaml"),
            "-q", str(site.folder / f"my_qadapter_{kind}.yaml"),
            "--launch_dir", str(launches),
            "rapidfire", "--nlaunches", "infinite", "--sleep", "3", "--maxjobs_queue", "3",
        ]  # fmt: skip
        workers.append(start(argv, site, f"qlaunch-{kind}"))

    lp_db = mongo_client(site.uri)[yaml.safe_load(site.launchpad.read_text())["name"]]
    try:

        def finished() -> bool:
            wf = lp_db.workflows.find_one({"name": "online"}, {"state": 1})
            return wf is not None and wf["state"] in ("COMPLETED", "FIZZLED")

        wait_for(finished, "the online workflow ending", 900, workers[0], site, "qlaunch-cpu")
    finally:
        for w in workers:
            stop(w)
    online = lp_db.workflows.find_one({"name": "online"})
    assert online is not None and online["state"] == "COMPLETED"
    state = CampaignState.load(get_db(load_config(yml).store_spec()), "online")
    assert state.doc["status"] == "completed" and state.n_used() == BUDGET
    assert store_check(state) == (0, 0, True)
    # every launch ran inside a Slurm job, by the worker of its category
    by_worker: dict[str, set[str]] = {}
    for launch in lp_db.launches.find(
        {"state": "COMPLETED"}, {"fworker.name": 1, "fw_id": 1, "launch_dir": 1}
    ):
        fw = lp_db.fireworks.find_one({"fw_id": launch["fw_id"]}, {"spec._aso.kind": 1})
        assert fw is not None
        by_worker.setdefault(launch["fworker"]["name"], set()).add(fw["spec"]["_aso"]["kind"])
        record = json.loads((Path(launch["launch_dir"]) / "FW_slurm.json").read_text())
        assert record["job_id"], launch
    # the proposals search with the surrogate: GPU-tagged like the training (docs/cluster.md)
    assert by_worker["aso-gpu-worker"] == {"train", "propose"}
    assert {"start", "evaluate"} <= by_worker["aso-cpu-worker"] and "train" not in by_worker["aso-cpu-worker"]
    assert all(e["provenance"]["pdf"]["slurm_job_id"] for e in state.evaluations())


def test_controller_killed_then_server_restarted(tmp_path, private_ferretdb, slurm_testbed, fault_ledger):
    """The controller is SIGKILLed with jobs in flight; ``aso resume`` (no options) reopens the recorded
    LaunchPad and drives the surviving workflow on; then the server is stopped for 20 s under it: it
    waits, carries on, and the campaign ends with nothing lost or duplicated."""

    from aso_workflows.campaign.state import CampaignState, get_db
    from aso_workflows.config import load_config

    server = private_ferretdb("story")
    site = write_site(tmp_path / "site", server.uri(), "fireworks", "aso", slurm_testbed.env)
    yml = site.campaign("crash", budget=9)
    lp_db = mongo_client(server.uri())["fireworks"]
    a = start([*ASO, "submit", str(yml), "--launchpad", str(site.launchpad)], site, "A-submit")
    try:

        def in_flight() -> list[dict]:
            return list(
                lp_db.launches.find(
                    {"state": {"$in": ["RESERVED", "RUNNING"]}, "slurm.job_id": {"$ne": None}}
                )
            )

        wait_for(
            lambda: completed_evaluations(site, "crash") >= 2 and in_flight(),
            "jobs in flight",
            600,
            a,
            site,
            "A-submit",
        )
        orphans = {d["slurm"]["job_id"] for d in in_flight()}
    finally:
        stop(a, signal.SIGKILL)
    fault_ledger.inject(
        "controller_sigkill", f"aso submit killed with Slurm jobs {sorted(orphans)} in flight"
    )
    r = start([*ASO, "resume", str(yml), "--lost-after", "5"], site, "R-resume")
    try:
        wait_for(lambda: completed_evaluations(site, "crash") >= 5, "5 evaluations", 600, r, site, "R-resume")
        fault_ledger.inject("database_restart", "server stopped 20 s under the resumed Slurm controller")
        server.stop()
        time.sleep(20)
        assert r.poll() is None, (
            "the controller must wait for the server: " + log_of(site, "R-resume")[-2000:]
        )
        server.start()
        rc = r.wait(timeout=900)
    finally:
        stop(r, signal.SIGKILL)
    out = log_of(site, "R-resume")
    assert rc == 0 and "workflow COMPLETED" in out, out[-3000:]
    assert "LaunchPad unreachable" in out and "LaunchPad back after" in out
    # the resume drove the workflow the killed controller left, and read back the jobs it had submitted
    workflows = list(lp_db.workflows.find({"name": "crash"}, {"state": 1}))
    assert len(workflows) == 1 and workflows[0]["state"] == "COMPLETED"
    picked_up = {
        d["slurm"]["job_id"]
        for d in lp_db.launches.find({"slurm.job_id": {"$in": sorted(orphans)}, "state": "COMPLETED"})
    }
    state = CampaignState.load(get_db(load_config(yml).store_spec()), "crash")
    assert fault_ledger.verify_campaign(
        "controller_sigkill",
        state,
        detail=f"reattached; {len(picked_up)} of {len(orphans)} orphaned jobs read back",
    )
    assert picked_up, "none of the killed controller's jobs was read back by the resume"
    assert fault_ledger.verify_campaign("database_restart", state, detail="Slurm controller waited 20 s")
    assert state.n_used() == 9
