"""The FireWorks web GUI on a LaunchPad holding a real (tiny) campaign run through FireWorks.

The campaign runs in-process with FireWorks' ``rapidfire`` on a mongomock LaunchPad (or a real MongoDB
when ASO_TEST_MONGODB_URI is set); its campaign store is the embedded store or mongomock. The GUI is
served from a thread (werkzeug) or by gunicorn (forked), read with urllib and in headless Chromium
(screenshots in ``test-artifacts/webgui/``).
"""

from __future__ import annotations

import html
import multiprocessing
import os
import re
import signal
import socket
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
from campaign_files import campaign_yaml

from aso_workflows.campaign.jobs import CampaignMaker
from aso_workflows.campaign.learn import read_inputs
from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.cluster.launchpad import load_launchpad
from aso_workflows.cluster.offline import to_workflow
from aso_workflows.config import load_config
from aso_workflows.errors import InputError
from aso_workflows.jobstore import shared_job_store
from aso_workflows.testing.launchpad import mongomock_launchpad
from aso_workflows.webgui.server import (
    PASSWORD_ENV,
    USERNAME_ENV,
    BasicAuth,
    WebGuiSettings,
    key_numbers,
    serve,
    serve_in_thread,
)

EXAMPLE = Path(__file__).parents[1] / "examples" / "linio2_jt_pdf"
MONGO_URI = os.environ.get("ASO_TEST_MONGODB_URI")
CAMPAIGN = "gui-pdf"


# ---- a real campaign in a LaunchPad ------------------------------------------------------------------
@pytest.fixture(
    scope="module",
    params=[
        "embedded",
        "mongomock",
        pytest.param(
            "mongodb",
            marks=[pytest.mark.mongodb, pytest.mark.skipif(not MONGO_URI, reason="set ASO_TEST_MONGODB_URI")],
        ),
    ],
)
def campaign(request, tmp_path_factory, one_torch_thread):
    """(LaunchPad, CampaignState, store kind): a PDF campaign of 5 structures (2 iterations) run by FireWorks."""
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    kind = request.param
    tmp = tmp_path_factory.mktemp(f"webgui-{kind}")
    database = f"aso_test_{uuid.uuid4().hex[:10]}"
    if kind == "mongodb":
        assert MONGO_URI is not None  # (the mongodb parameter is skipped without it)
        lp = load_launchpad(MONGO_URI, database=database)
        lp.reset("", require_password=False)
        store = {"kind": "mongodb", "uri": MONGO_URI, "database": database}
        job_store = shared_job_store(MONGO_URI, database=database)
    else:
        lp = mongomock_launchpad()
        store = {"kind": kind} if kind == "embedded" else {"kind": "mongomock", "database": database}
        job_store = shared_job_store(tmp / "jobstore")
    surrogate = {"n_models": 2, "hidden": 16, "n_layers": 2, "n_rbf": 16, "epochs": 10, "patience": 5}
    # budget 5: start + 2 initial in iteration 0, then 2 proposals in iteration 1
    path = campaign_yaml(
        tmp,
        CAMPAIGN,
        budget=5,
        initial_size=2,
        surrogate=surrogate,
        proposal={"n_starts": 4, "steps": 5, "progress": False},
        store=store,
    )
    cfg = load_config(path)
    flow = CampaignMaker().make(cfg, workdir=cfg.output_dir, inputs=read_inputs(cfg))
    lp.add_wf(to_workflow(flow, job_store, name=cfg.name))
    (tmp / "launches").mkdir()
    rapidfire(lp, FWorker(), m_dir=str(tmp / "launches"), strm_lvl="ERROR")
    state = CampaignState.load(get_db(cfg.store_spec()), cfg.name)
    try:
        yield lp, state, kind
    finally:
        if kind == "mongodb":
            lp.connection.drop_database(database)


def _evaluation_fws(lp) -> list[dict]:
    return [lp.get_fw_dict_by_id(d["fw_id"]) for d in lp.fireworks.find({"spec._aso.kind": "evaluate"})]


def test_fireworks_carry_campaign_numbers(campaign):
    lp, state, _ = campaign
    wf = lp.workflows.find_one({})
    assert wf["name"] == CAMPAIGN and wf["metadata"] == {"campaign": CAMPAIGN}
    assert set(wf["fw_states"].values()) == {"COMPLETED"}
    assert state.doc["status"] == "completed" and state.n_used() == 5
    fws = list(lp.fireworks.find({}, {"name": 1, "spec._aso": 1}))
    assert len(fws) == 10  # the start job, 3 + 2 evaluations, a train and a propose job per iteration
    assert all(fw["spec"]["_aso"]["campaign"] == CAMPAIGN for fw in fws)
    kinds = sorted(fw["spec"]["_aso"]["kind"] for fw in fws)
    assert kinds == ["evaluate"] * 5 + ["propose"] * 2 + ["start"] + ["train"] * 2
    # every evaluation Firework: its name and spec say which candidate; its launch holds the mismatch
    # that the campaign store recorded for that candidate
    by_pid = {(e["iteration"], e["candidate"]): e for e in state.evaluations(status=None)}
    evals = _evaluation_fws(lp)
    assert sorted(
        (fw["spec"]["_aso"]["iteration"], fw["spec"]["_aso"]["candidate"]) for fw in evals
    ) == sorted(by_pid)
    for fw in evals:
        tag = fw["spec"]["_aso"]
        assert fw["name"] == f"{CAMPAIGN} / it {tag['iteration']} / cand {tag['candidate']} / pdf"
        assert tag["technique"] == "pdf"
        stored = fw["launches"][-1]["action"]["stored_data"]
        ev = by_pid[(tag["iteration"], tag["candidate"])]
        assert stored["mismatch"] == pytest.approx(ev["objective"]) and stored["status"] == "completed"
        assert stored["mse"] == pytest.approx(ev["mse"])
        rows = dict(key_numbers(fw))
        assert rows["iteration"] == str(tag["iteration"]) and rows["mismatch"] == f"{ev['objective']:.4g}"


# ---- serving -----------------------------------------------------------------------------------------
def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth is not None:
        req.add_header("Authorization", "Basic " + b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _table(dom: str) -> dict[str, str]:
    """Label → text of the "Campaign" table on a Firework page."""
    m = re.search(r'<table[^>]*id="aso-key-numbers".*?</table>', dom, re.S)
    assert m, "no campaign table on the Firework page"
    return {
        html.unescape(k): html.unescape(v.strip())
        for k, v in re.findall(r"<th>([^<]*)</th>\s*<td[^>]*>([^<]*)</td>", m.group(0))
    }


@pytest.mark.browser
def test_browser_shows_workflows_and_firework_numbers(campaign):
    from browser import render, require_chromium

    require_chromium()
    lp, state, kind = campaign
    fw = next(f for f in _evaluation_fws(lp) if f["spec"]["_aso"]["iteration"] == 1)
    tag = fw["spec"]["_aso"]
    ev = next(
        e for e in state.evaluations(status=None) if (e["iteration"], e["candidate"]) == (1, tag["candidate"])
    )
    with serve_in_thread(lp) as url:
        assert url.startswith("http://127.0.0.1:")
        home = render(f"{url}/", screenshot=f"webgui/{kind}/wf_list.png")
        page = render(f"{url}/fw/{fw['fw_id']}", screenshot=f"webgui/{kind}/fw_{fw['fw_id']}.png")
        wf_page = render(f"{url}/wf/{fw['fw_id']}", screenshot=f"webgui/{kind}/wf.png")
    # workflow list: the campaign, and its Fireworks by readable name
    assert re.search(rf'class="wf-name"[^>]*>\s*<strong>{CAMPAIGN}</strong>', home)
    names = set(re.findall(r'class="fw-link COMPLETED"[^>]*>([^<]+)</a>', home))
    shown = {
        fw_id: (value, fit)
        for fw_id, value, fit in re.findall(
            r'href="/fw/(\d+)"[^>]*>[^<]+</a>\s*<small class="aso-mismatch">mismatch ([^<,]+)(, [^<]+)?<',
            home,
        )
    }
    # the mismatch, then the goodness of fit people quote for a PDF (Rw)
    assert shown[str(fw["fw_id"])][0] == f"{ev['objective']:.4g}"
    rw = re.fullmatch(r", Rw (\S+)", shown[str(fw["fw_id"])][1])
    assert rw and float(rw.group(1)) == pytest.approx(ev["goodness"]["pdf"]["value"], rel=1e-3), shown
    assert len(shown) == 5  # every evaluation, and nothing else
    assert {
        f"{CAMPAIGN} / it 1 / cand 0 / pdf",
        f"{CAMPAIGN} / it 1 / train",
        f"{CAMPAIGN} / it 0 / propose",
    } <= names
    # Firework page: the key numbers, rendered on the server
    assert f"Firework {fw['fw_id']} : {fw['name']}" in html.unescape(page)
    rows = _table(page)
    assert (
        rows["campaign"] == CAMPAIGN
        and rows["iteration"] == "1"
        and rows["candidate"] == str(tag["candidate"])
    )
    assert rows["technique"] == "pdf" and rows["kind"] == "evaluate" and rows["status"] == "completed"
    assert float(rows["mismatch"]) == pytest.approx(ev["objective"], rel=1e-3)
    assert float(rows["mse pdf"]) == pytest.approx(ev["mse"]["pdf"], rel=1e-3)
    assert "Workflow" in wf_page and f"{CAMPAIGN} / it 0 / cand 2 / pdf" in html.unescape(wf_page)
    if "/aso-static/jquery.min.js" in page:  # a local jQuery: the JSON view also renders without internet
        view = page[page.index('<div id="json">') :]
        assert view.startswith('<div id="json"><div class="jsonview">') and "</span>_aso<span" in view
        assert "<canvas" in wf_page  # the workflow graph (cytoscape) was drawn


def test_basic_auth_from_fireworks_env_vars(campaign, monkeypatch, caplog, capfd):
    lp, _, kind = campaign
    if kind != "embedded":
        pytest.skip("the login does not depend on the store")
    secret = "s3cret-" + uuid.uuid4().hex[:8]
    monkeypatch.setenv(USERNAME_ENV, "aso")
    monkeypatch.setenv(PASSWORD_ENV, secret)
    settings = WebGuiSettings(port=0, server="werkzeug", auth=BasicAuth.from_env())
    assert "aso" in settings.describe() and secret not in settings.describe() + repr(settings)
    caplog.set_level("DEBUG")
    fw_id = _evaluation_fws(lp)[0]["fw_id"]
    with serve_in_thread(lp, settings) as url:
        assert _get(f"{url}/")[0] == 401
        assert _get(f"{url}/fw/{fw_id}", ("aso", "wrong"))[0] == 401
        status, body = _get(f"{url}/", ("aso", secret))
        assert status == 200 and CAMPAIGN in body
        assert _get(f"{url}/fw/{fw_id}", ("aso", secret))[0] == 200
    out, err = capfd.readouterr()
    assert secret not in caplog.text + out + err
    # without the variables the GUI is open again (and still only on 127.0.0.1)
    monkeypatch.delenv(USERNAME_ENV)
    monkeypatch.delenv(PASSWORD_ENV)
    assert BasicAuth.from_env() is None
    with serve_in_thread(lp) as url:
        assert _get(f"{url}/")[0] == 200
        # the campaign's workflow by its metadata (redirects to /wf/<id>)
        status, body = _get(f"{url}/wf/metadata/campaign/{CAMPAIGN}/")
        assert status == 200 and f"{CAMPAIGN} / it 1 / propose" in html.unescape(body)


def test_half_configured_auth_and_default_bind(monkeypatch):
    monkeypatch.delenv(USERNAME_ENV, raising=False)
    monkeypatch.setenv(PASSWORD_ENV, "only-the-password")
    with pytest.raises(InputError, match=USERNAME_ENV) as exc:
        BasicAuth.from_env()
    assert "only-the-password" not in str(exc.value)
    assert WebGuiSettings().host == "127.0.0.1" and WebGuiSettings().loopback
    assert not WebGuiSettings(host="0.0.0.0").loopback
    with pytest.raises(InputError, match="--server"):
        WebGuiSettings(server="flask")  # type: ignore[arg-type]  # a bad value on purpose


def test_cli_defaults_and_one_line_errors(tmp_path, monkeypatch):
    import typer.main
    from typer.testing import CliRunner

    from aso_workflows.cli import app

    group: Any = typer.main.get_command(app)  # a group (typer ≥ 0.29 brings its own click, not click's)
    command = group.commands["webgui"]
    defaults = {p.name: p.default for p in command.params}
    assert defaults["host"] == "127.0.0.1" and defaults["server"] == "gunicorn"
    runner = CliRunner()
    monkeypatch.delenv(USERNAME_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    res = runner.invoke(app, ["webgui", "-l", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and "launchpad file not found" in res.output
    assert len(res.output.strip().splitlines()) == 1
    monkeypatch.setenv(PASSWORD_ENV, "pw-" + uuid.uuid4().hex)
    res = runner.invoke(app, ["webgui", "-l", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2 and USERNAME_ENV in res.output
    assert os.environ[PASSWORD_ENV] not in res.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gunicorn_child(lp, port: int) -> None:
    serve(lambda: lp, WebGuiSettings(port=port, server="gunicorn", workers=2), echo=lambda _: None)


def test_gunicorn_serves_the_campaign(campaign):
    """gunicorn (the pinned version) with two forked workers, each opening its LaunchPad after the fork."""
    lp, _, kind = campaign
    if kind != "mongomock":
        pytest.skip("one store is enough for the server")
    port = _free_port()
    # fork: the child (gunicorn's master) and its workers inherit the in-process mongomock LaunchPad
    proc = multiprocessing.get_context("fork").Process(target=_gunicorn_child, args=(lp, port), daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                assert proc.is_alive() and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.3)
        assert status == 200 and f"{CAMPAIGN} / it 1 / cand 1 / pdf" in html.unescape(body)
        fw_id = _evaluation_fws(lp)[0]["fw_id"]
        status, body = _get(f"http://127.0.0.1:{port}/fw/{fw_id}")
        assert status == 200 and 'id="aso-key-numbers"' in body
    finally:
        if proc.pid is not None and proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)  # gunicorn's graceful shutdown stops its workers
        proc.join(timeout=30)
    assert proc.exitcode == 0


# ---- the live campaign page ----------------------------------------------------------------------------
def _summary_dd(dom: str, key: str) -> str:
    m = re.search(rf"<dd class=[\"']aso-{key}[\"']>(.*?)</dd>", dom, re.S)
    assert m, f"no {key} in the campaign page's summary"
    return html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).strip()


@pytest.mark.browser
def test_campaign_page_next_to_fireworks_pages(campaign):
    """``/aso/campaign/<name>``: linked from the workflow and Firework pages; the summary, the curve and
    the spectra of ``aso report``, failures and pending candidates, read from the store (here: ended)."""
    from browser import render, require_chromium

    from aso_workflows.results import Campaign
    from aso_workflows.webgui.campaign_page import campaign_store_spec

    require_chromium()
    lp, state, kind = campaign
    assert campaign_store_spec(lp, CAMPAIGN)["kind"] == state.db.spec.kind
    summary = Campaign(state).summary()
    fw_id = _evaluation_fws(lp)[0]["fw_id"]
    with serve_in_thread(lp) as url:
        wf_page = render(f"{url}/wf/{fw_id}")
        fw_page = render(f"{url}/fw/{fw_id}")
        page = render(
            f"{url}/aso/campaign/{CAMPAIGN}", screenshot=f"webgui/{kind}/campaign_page.png", size=(1280, 1800)
        )
        assert _get(f"{url}/aso/campaign/no-such-campaign")[0] == 404
    link = f'href="/aso/campaign/{CAMPAIGN}"'
    assert link in wf_page and link in fw_page
    assert f"Campaign {CAMPAIGN}" in page and "http-equiv" not in page  # ended: no reloading
    assert (
        _summary_dd(page, "simulations")
        == f"{summary.n_used} / {summary.budget} used, {summary.n_failed} failed"
    )
    assert _summary_dd(page, "best-mismatch").startswith(
        f"{summary.best_objective:.4g} (candidate {summary.best_ref})"
    )
    assert _summary_dd(page, "status").startswith("completed")
    for ident in ("aso-convergence", "aso-spectra"):
        m = re.search(rf"<img id=\"{ident}\"[^>]*src=\"data:image/png;base64,([^\"]+)\"", page)
        assert m and len(m.group(1)) > 10_000, ident  # a real figure, as aso report draws it
    assert "Failed evaluations (0)" in page and "Pending candidates (0)" in page
