"""Access: unreachable MongoDB, refused credentials, auth/TLS in the launchpad files, passwords kept out of
everything a campaign writes.

No MongoDB server can run here (docs/STACK.md), so

- "unreachable" uses real sockets: a closed port on 127.0.0.1, and a TCP server started by the test that
  accepts connections and never answers (what a firewall that drops packets, or a hung server, looks like);
- refused credentials need a server: that tier runs when ``ASO_TEST_MONGODB_URI`` is set and is skipped
  otherwise (with the reason);
- what carries a password is checked on what the code really writes: the campaign store's documents, the
  output folder, the CLI output, the FireWorks workflow documents (mongomock LaunchPad) and the jobflow
  JobStore serialised into them.

Web GUI binding and basic auth are tested in ``tests/test_webgui.py``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus, unquote, urlsplit, urlunsplit

import pytest
from campaign_files import campaign_yaml
from typer.testing import CliRunner

from aso_workflows.cli import app
from aso_workflows.errors import InputError
from aso_workflows.store import StoreSpec, open_store, redact_uri

REPO = Path(__file__).parents[1]
EXAMPLE = REPO / "examples" / "linio2_jt_pdf"
LAUNCHPAD_DIR = REPO / "launchpad"
MONGODB_URI = os.environ.get("ASO_TEST_MONGODB_URI")
# An error path must answer within seconds: the store's default server-selection timeout is 5 s; this is
# the bound the tests hold the whole command to (Python start-up and imports included), not a speed target.
ERROR_WITHIN_S = 15.0

runner = CliRunner()


def campaign_file(folder: Path, **fields) -> Path:
    defaults = {"budget": 5, "optimizer": "random", "seed": 2, "batch_size": None}
    return campaign_yaml(folder, fields.pop("name", "access"), **{**defaults, **fields})


def one_error_line(stderr: str, exit_code: int) -> str:
    lines = stderr.strip().splitlines()
    assert exit_code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in stderr
    return lines[0]


def submit_args(campaign: Path, launchpad: str) -> list[str]:
    return [
        "submit",
        str(campaign),
        "--launchpad",
        launchpad,
        "--qadapter-cpu",
        str(LAUNCHPAD_DIR / "my_qadapter_cpu.yaml"),
        "--qadapter-gpu",
        str(LAUNCHPAD_DIR / "my_qadapter_gpu.yaml"),
    ]


# ---- unreachable MongoDB ---------------------------------------------------------------------------------
@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SilentServer:
    port: int
    accepted: list  # connections it accepted (and never answered)


@pytest.fixture
def silent_server():
    """A real TCP server on 127.0.0.1 that accepts connections and never sends a byte."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            accepted.append(conn)  # held open, never answered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield SilentServer(port=srv.getsockname()[1], accepted=accepted)
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    srv.close()


def test_unreachable_store_closed_port_real_process(tmp_path, closed_port, fault_ledger):
    """``aso run`` as its own process, store on a closed port, default timeout: one line within seconds."""
    secret = f"pw-{uuid.uuid4().hex[:10]}"
    uri = f"mongodb://aso:{secret}@127.0.0.1:{closed_port}/aso?authSource=admin"
    yml = campaign_file(tmp_path, store={"kind": "mongodb", "uri": uri})
    fault_ledger.inject("bad-input:mongodb-unreachable", "aso run, store on a closed port")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "aso_workflows.cli", "run", str(yml), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - t0
    line = one_error_line(proc.stderr, proc.returncode)
    assert f"store.uri (mongodb://aso:***@127.0.0.1:{closed_port}/aso?authSource=admin)" in line
    assert "MongoDB not reachable within 5 s" in line and "Connection refused" in line
    assert "expected a server answering" in line
    assert secret not in proc.stdout + proc.stderr
    assert elapsed < ERROR_WITHIN_S, f"{elapsed:.1f} s"
    assert not (tmp_path / "out" / "store").exists()
    fault_ledger.verify(
        "bad-input:mongodb-unreachable", not (tmp_path / "out" / "store").exists(), f"{elapsed:.1f} s: {line}"
    )


def test_unreachable_store_silent_server(tmp_path, silent_server, fault_ledger):
    """A server that accepts and never answers: the server-selection timeout still ends it."""
    secret = f"pw-{uuid.uuid4().hex[:10]}"
    uri = f"mongodb://aso:{secret}@127.0.0.1:{silent_server.port}/aso"
    yml = campaign_file(tmp_path, store={"kind": "mongodb", "uri": uri, "timeout_ms": 2000})
    fault_ledger.inject("bad-input:mongodb-unreachable", "aso run, store on a silent server")
    t0 = time.perf_counter()
    result = runner.invoke(app, ["run", str(yml), "-q"])
    elapsed = time.perf_counter() - t0
    line = one_error_line(result.stderr, result.exit_code)
    assert "store.uri (mongodb://aso:***@127.0.0.1" in line and "not reachable within 2 s" in line
    assert secret not in result.output
    assert elapsed < ERROR_WITHIN_S, f"{elapsed:.1f} s"
    assert silent_server.accepted, "the client never reached the silent server"
    fault_ledger.verify(
        "bad-input:mongodb-unreachable",
        elapsed < ERROR_WITHIN_S and line.startswith("error:"),
        f"{elapsed:.1f} s",
    )


def test_unreachable_store_api_with_password_file(tmp_path, silent_server):
    """The Python API: one-line InputError; the password from the file appears nowhere in it."""
    secret = f"pw-{uuid.uuid4().hex[:10]}"
    pw = tmp_path / "store.pw"
    pw.write_text(secret + "\n")
    spec = StoreSpec(
        kind="mongodb",
        uri=f"mongodb://aso@127.0.0.1:{silent_server.port}/",
        timeout_ms=1500,
        password_file=str(pw),
    )
    t0 = time.perf_counter()
    with pytest.raises(InputError) as err:
        open_store(spec)
    assert time.perf_counter() - t0 < ERROR_WITHIN_S
    msg = str(err.value)
    assert "\n" not in msg and "not reachable within 1.5 s" in msg and secret not in msg
    assert silent_server.accepted
    assert secret not in json.dumps(spec.as_dict())  # what jobs and Fireworks receive


@pytest.mark.parametrize("how", ["uri", "file"])
def test_unreachable_launchpad(tmp_path, silent_server, closed_port, fault_ledger, how):
    """``aso submit`` with a LaunchPad that cannot be reached: one line, nothing written, no password."""
    secret = f"pw-{uuid.uuid4().hex[:10]}"
    if how == "uri":
        launchpad = f"mongodb://aso:{secret}@127.0.0.1:{silent_server.port}/fireworks?authSource=admin"
        expected = [f"mongodb://aso:***@127.0.0.1:{silent_server.port}/fireworks", "not reachable within 5 s"]
    else:
        lp = tmp_path / "my_launchpad.yaml"
        lp.write_text(
            f"host: 127.0.0.1\nport: {closed_port}\nname: fireworks\nusername: aso\npassword: '{secret}'\n"
            "authsource: admin\nmongoclient_kwargs: {serverSelectionTimeoutMS: 2000}\n"
        )
        launchpad = str(lp)
        expected = ["my_launchpad.yaml", f"MongoDB 127.0.0.1:{closed_port} database fireworks", "within 2 s"]
    yml = campaign_file(tmp_path)
    fault_ledger.inject("bad-input:mongodb-unreachable", f"aso submit, launchpad {how}")
    t0 = time.perf_counter()
    result = runner.invoke(app, submit_args(yml, launchpad))
    elapsed = time.perf_counter() - t0
    line = one_error_line(result.stderr, result.exit_code)
    for needle in expected:
        assert needle in line, (needle, line)
    assert secret not in result.output
    assert elapsed < ERROR_WITHIN_S, f"{elapsed:.1f} s"
    assert not (tmp_path / "out").exists(), "nothing may be written before the LaunchPad answers"
    assert how == "file" or silent_server.accepted
    fault_ledger.verify(
        "bad-input:mongodb-unreachable", not (tmp_path / "out").exists(), f"{elapsed:.1f} s: {line}"
    )


# ---- refused credentials (needs a MongoDB server) ------------------------------------------------------------
def _with_credentials(uri: str, user: str, password: str) -> str:
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote_plus(user)}:{quote_plus(password)}@{host}"))


@pytest.mark.mongodb
@pytest.mark.skipif(not MONGODB_URI, reason="needs a MongoDB server: set ASO_TEST_MONGODB_URI=mongodb://...")
def test_wrong_credentials_are_one_line(tmp_path, fault_ledger):
    from aso_workflows.cluster.launchpad import load_launchpad

    assert MONGODB_URI is not None  # (skipped without it)
    secret = f"wrong-{uuid.uuid4().hex[:10]}"
    bad = _with_credentials(MONGODB_URI, "aso_no_such_user", secret)
    fault_ledger.inject(
        "bad-input:credentials", "open_store / load_launchpad / aso run with a wrong password"
    )
    with pytest.raises(InputError) as err:
        open_store(StoreSpec(kind="mongodb", uri=bad, database=f"aso_test_{uuid.uuid4().hex[:8]}"))
    msg = str(err.value)
    assert "refused the credentials" in msg and "\n" not in msg and secret not in msg
    with pytest.raises(InputError) as err:
        load_launchpad(bad)
    assert "refused the credentials" in str(err.value) and secret not in str(err.value)
    yml = campaign_file(tmp_path, store={"kind": "mongodb", "uri": bad})
    result = runner.invoke(app, ["run", str(yml), "-q"])
    line = one_error_line(result.stderr, result.exit_code)
    assert "store.uri" in line and "refused the credentials" in line and secret not in result.output
    fault_ledger.verify("bad-input:credentials", result.exit_code == 2 and secret not in result.output, line)


@pytest.mark.mongodb
@pytest.mark.skipif(not MONGODB_URI, reason="needs a MongoDB server: set ASO_TEST_MONGODB_URI=mongodb://...")
def test_password_file_connects_and_stays_out_of_the_spec(tmp_path):
    """The tier's own credentials split into a user-only URI plus a password file: the store opens."""
    assert MONGODB_URI is not None  # (skipped without it)
    parts = urlsplit(MONGODB_URI)
    if parts.password is None:
        pytest.skip("ASO_TEST_MONGODB_URI has no password to move into a file")
    pw = tmp_path / "pw"
    pw.write_text(unquote(parts.password))
    user_only = urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.netloc.rsplit('@', 1)[-1]}"))
    spec = StoreSpec(
        kind="mongodb", uri=user_only, database=f"aso_test_{uuid.uuid4().hex[:8]}", password_file=str(pw)
    )
    db = open_store(spec)
    try:
        db.evaluations.insert_one({"_id": "x"})
        assert db.evaluations.count_documents({}) == 1
    finally:
        db._client.drop_database(spec.database)
        db.close()
    assert unquote(parts.password) not in json.dumps(spec.as_dict())


# ---- launchpad templates: auth and TLS ------------------------------------------------------------------------
def test_launchpad_template_has_auth_and_tls(tmp_path):
    from aso_workflows.cluster.launchpad import describe_launchpad, load_launchpad

    lp = load_launchpad(LAUNCHPAD_DIR / "my_launchpad.yaml", check=False)
    assert lp.username == "aso_user" and lp.password == "CHANGE_ME" and lp.authsource == "admin"
    assert lp.mongoclient_kwargs["tls"] is True  # TLS on by default
    assert lp.mongoclient_kwargs["serverSelectionTimeoutMS"] == 5000
    assert "CHANGE_ME" not in describe_launchpad(lp)
    # the URI form described in the template's comments
    uri_file = tmp_path / "uri_launchpad.yaml"
    uri_file.write_text(
        'host: "mongodb://aso_user:S3cret@127.0.0.1:27017/?authSource=admin&tls=true"\n'
        "uri_mode: true\nname: fireworks\n"
    )
    lp = load_launchpad(uri_file, check=False)
    assert lp.uri_mode and lp.name == "fireworks"
    assert "S3cret" not in describe_launchpad(lp) and "aso_user:***@" in describe_launchpad(lp)
    for name in (
        "my_fworker_cpu.yaml",
        "my_fworker_gpu.yaml",
        "my_qadapter_cpu.yaml",
        "my_qadapter_gpu.yaml",
    ):
        assert "password" not in (LAUNCHPAD_DIR / name).read_text().lower(), name


def test_launchpad_tls_options_reach_pymongo(tmp_path):
    """The template's TLS options (CA file, client certificate) end up in pymongo's TLS context."""
    import certifi

    from aso_workflows.cluster.launchpad import load_launchpad

    p = tmp_path / "tls.yaml"
    p.write_text(
        "host: 127.0.0.1\nport: 27017\nname: fireworks\nusername: aso\npassword: pw\nauthsource: admin\n"
        f"mongoclient_kwargs: {{tls: true, tlsCAFile: {certifi.where()}}}\n"
    )
    lp = load_launchpad(p, check=False)
    ctx = lp.connection.options.pool_options._ssl_context
    assert ctx is not None and ctx.check_hostname  # TLS with hostname checking
    creds = lp.connection.options.pool_options._credentials
    assert (creds.username, creds.source) == ("aso", "admin")


# ---- passwords never in outputs --------------------------------------------------------------------------
def _files_containing(folder: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_store_password_never_in_campaign_outputs(tmp_path):
    """A whole campaign whose store URI carries a password: not in its documents, files or output.

    The store is the in-process mongomock stand-in for MongoDB (no server here): the URI takes the same
    path through the config, the campaign document, the job arguments and the report.
    """
    from aso_workflows.campaign.state import CampaignState, get_db
    from aso_workflows.config import load_config

    secret = f"pw-{uuid.uuid4().hex[:12]}"
    uri = f"mongomock://aso:{secret}@ci-{uuid.uuid4().hex[:6]}/"
    yml = campaign_file(tmp_path, name="secret-store", store={"kind": "mongomock", "uri": uri})
    result = runner.invoke(app, ["run", str(yml), "-q"])
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    out = tmp_path / "out"
    assert (out / "report.html").is_file() and (out / "history.csv").is_file()
    assert _files_containing(out, secret) == []  # report, history, CIFs, job store (SQLite), logs
    db = get_db(load_config(yml).store_spec())
    for name in ("campaigns", "evaluations", "proposals", "models", "spectra"):
        dumped = json.dumps(list(db.db[name].find({})), default=str)
        assert secret not in dumped, name
    state = CampaignState.load(db, "secret-store")
    assert state.config.store.uri == redact_uri(uri) and state.n_used() == 5


def test_job_store_password_file_keeps_fireworks_clean(tmp_path):
    """jobflow serialises the JobStore into every Firework: with a password file only its path is there."""
    from fireworks import Workflow
    from jobflow import job
    from jobflow.managers.fireworks import flow_to_workflow

    from aso_workflows.jobstore import shared_job_store

    secret = f"pw-{uuid.uuid4().hex[:12]}"
    pw = tmp_path / "jobstore.pw"
    pw.write_text(secret + "\n")

    @job
    def add(a, b):
        return a + b

    store = shared_job_store("mongodb://aso@127.0.0.1:27017/outputs", password_file=pw)
    doc = json.dumps(flow_to_workflow(add(1, 2), store=store).to_dict(), default=str)
    assert secret not in doc and str(pw) in doc
    # the job side: the Firework's store, rebuilt from the document, connects with the file's password
    rebuilt = Workflow.from_dict(json.loads(doc)).fws[0].tasks[0]["store"].docs_store
    rebuilt.connect()  # pymongo connects lazily: no server needed to see the credentials it will send
    creds = rebuilt._coll.database.client.options.pool_options._credentials
    assert (creds.username, creds.password) == ("aso", secret)
    assert secret not in json.dumps(rebuilt.as_dict(), default=str)  # not even after connecting
    rebuilt._coll.database.client.close()
    # an inline password, by contrast, is in the Firework (the reason for the password file)
    inline = shared_job_store(f"mongodb://aso:{secret}@127.0.0.1:27017/outputs")
    assert secret in json.dumps(flow_to_workflow(add(1, 2), store=inline).to_dict(), default=str)


def test_campaign_fireworks_carry_the_password_file_not_the_password(tmp_path):
    """The campaign's own Fireworks (aso submit --no-wait path on a mongomock LaunchPad)."""
    from aso_workflows.cluster.runner import ClusterCampaignRunner
    from aso_workflows.config import load_config
    from aso_workflows.jobstore import shared_job_store
    from aso_workflows.testing.launchpad import mongomock_launchpad

    secret = f"pw-{uuid.uuid4().hex[:12]}"
    pw = tmp_path / "store.pw"
    pw.write_text(secret)
    store = {
        "kind": "mongomock",
        "uri": f"mongomock://aso@ci-{uuid.uuid4().hex[:6]}/",
        "password_file": "store.pw",
    }
    cfg = load_config(campaign_file(tmp_path, name="fw-secret", store=store))
    assert cfg.store.password_file == pw  # relative to the campaign file
    lp = mongomock_launchpad()
    runner_ = ClusterCampaignRunner(
        launchpad=lp,
        launch_dir=tmp_path / "launches",
        queues={
            "default": str(LAUNCHPAD_DIR / "my_qadapter_cpu.yaml"),
            "gpu": str(LAUNCHPAD_DIR / "my_qadapter_gpu.yaml"),
        },
        job_store=shared_job_store("mongodb://aso@127.0.0.1:27017/outputs", password_file=pw),
    )
    runner_.submit(cfg)
    fireworks = list(lp.fireworks.find({}))
    assert fireworks
    dumped = json.dumps(fireworks + list(lp.workflows.find({})), default=str)
    assert secret not in dumped and str(pw) in dumped


def test_submit_warns_about_inline_passwords_without_printing_them(capsys):
    from aso_workflows.commands.common import warn_inline_passwords as _warn_inline_passwords

    secret = f"pw-{uuid.uuid4().hex[:12]}"
    _warn_inline_passwords(
        {
            "store.uri": f"mongodb://aso:{secret}@db.example.org/aso",
            "--job-store": "mongodb://aso@db.example.org/outputs",  # user only: no warning
            "other": None,
        }
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: the password in store.uri")
    assert "password file" in err[0] and secret not in err[0]
