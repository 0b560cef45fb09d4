"""The campaign store and the LaunchPad on a real MongoDB-wire-protocol server (FerretDB in CI).

What mongomock and montydb accept and a server refuses, checked on the server itself:

- arrays of arrays (FerretDB 1.x refuses them; MongoDB and the patched test build store them);
- numpy values (pymongo cannot encode them): they never reach BSON;
- documents over 16 MB (a structure of a large supercell): their big fields go to GridFS;
- wrong password, unreachable or TLS-only server: one line, within the 5 s server-selection timeout;
- TLS with a certificate authority made here;
- one controller per campaign: a second one refuses (the lease), on the embedded store as on the server;
- the server stopped and restarted under a running campaign: it stops with one line, resumes, and
  nothing is lost or duplicated.

The Slurm side of the same faults (the controller waits for the server; ``aso resume`` reattaches to the
surviving workflow) is in ``tests/test_story_mongodb.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from campaign_files import campaign_yaml
from jobflow import job
from mongodb_fixtures import launchpad_yaml, mongo_client
from typer.testing import CliRunner

from aso_workflows.cli import app
from aso_workflows.errors import InputError
from aso_workflows.store import INLINE_LIMIT, StoreRefused, StoreSpec, open_store

pytestmark = pytest.mark.mongodb

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "aso_workflows" / "data"
ASO = [str(Path(sys.executable).parent / "aso")]
WITHIN_S = 5.0  # the store's and the LaunchPad's server-selection timeout
runner = CliRunner()


def one_line(stderr: str, exit_code: int) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert exit_code == 2, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ---- what the server stores ------------------------------------------------------------------------------
def test_nested_arrays_stock_ferretdb_refuses_in_one_line_patched_build_stores(private_ferretdb, tmp_path):
    """Stock FerretDB 1.24 refuses arrays of arrays (every structure has one); the test build stores them."""
    import pymongo

    stock = private_ferretdb("stock", kind="stock")
    patched = private_ferretdb("patched")
    doc: dict[str, Any] = {
        "_id": "m",
        "lattice": {"matrix": [[5.75, 0.0, 0.0], [-1.44, 2.49, 0.0], [0.0, 0.0, 14.19]]},
    }
    with mongo_client(stock.uri(), serverSelectionTimeoutMS=5000) as c:
        with pytest.raises(pymongo.errors.WriteError) as err:
            c.t.x.insert_one(doc)
        assert err.value.code == 2 and "nested arrays are not supported" in str(err.value)
    with mongo_client(patched.uri(), serverSelectionTimeoutMS=5000) as c:
        c.t.x.insert_one(doc)
        assert c.t.x.find_one({"_id": "m"}) == doc
        found = c.t.x.find_one({"lattice.matrix": doc["lattice"]["matrix"]})
        assert found is not None and found["_id"] == "m"

    # a campaign on the stock server: one line naming the collection, the server's reason and the way out
    yml = campaign_yaml(
        tmp_path,
        "stock",
        optimizer="random",
        budget=4,
        store={"kind": "mongodb", "uri": stock.uri(), "database": "aso"},
    )
    result = runner.invoke(app, ["run", str(yml), "-q"])
    line = one_line(result.stderr, result.exit_code)
    assert "the server refused a write to 'campaigns'" in line and "nested arrays are not supported" in line
    assert "FerretDB 1.x stores no arrays of arrays" in line and stock.password not in line
    # and the LaunchPad: FireWorks' own insert of the workflow, same kind of line
    from aso_workflows.cluster.launchpad import load_launchpad
    from aso_workflows.cluster.offline import SlurmOfflineExecutor

    lp = load_launchpad(stock.uri("fireworks"))
    ex = SlurmOfflineExecutor(lp, tmp_path / "launches", queues=_queues(), job_store=None)
    with pytest.raises(StoreRefused) as err:
        ex.add_flow(lattice_volume([[5.75, 0.0, 0.0], [0.0, 2.49, 0.0], [0.0, 0.0, 14.19]]))
    msg = str(err.value)
    assert "\n" not in msg and "refused the workflow" in msg and "nested arrays" in msg


@job
def lattice_volume(matrix: list[list[float]]) -> float:
    """A job whose argument is an array of arrays (as every structure's lattice is)."""
    return float(abs(np.linalg.det(np.array(matrix))))


def test_concurrent_writes_to_one_document_lose_nothing(private_ferretdb, mongodb_uri, fresh_databases):
    """8 clients × 100 ``$inc`` on one document: MongoDB (and the patched test build) keep all 800;
    stock FerretDB 1.x loses most (it reads, changes and writes back in separate steps), which is what
    breaks FireWorks' workflow lock and launch completion with several ``rlaunch`` workers."""
    import threading

    def hammer(uri: str, database: str) -> int:
        with mongo_client(uri, serverSelectionTimeoutMS=5000) as c:
            c[database].counter.insert_one({"_id": 1, "n": 0})

            def work() -> None:
                with mongo_client(uri, serverSelectionTimeoutMS=5000) as mine:
                    for _ in range(100):
                        mine[database].counter.update_one({"_id": 1}, {"$inc": {"n": 1}})

            threads = [threading.Thread(target=work) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            counter = c[database].counter.find_one({"_id": 1})
            assert counter is not None
            return counter["n"]

    assert hammer(mongodb_uri, fresh_databases()) == 800  # the tier's server (patched FerretDB in CI)
    stock = private_ferretdb("stock", kind="stock")
    lost = 800 - hammer(stock.uri(), "aso")
    assert lost > 0, "stock FerretDB kept every concurrent update: drop the atomic-writes patch?"


def _queues() -> dict:
    from aso_workflows.cluster.queues import slurm_queue

    return {"default": slurm_queue("cpu", partition="cpu")}


def test_numpy_values_never_reach_bson(mongodb_uri, fresh_databases):
    """pymongo refuses numpy scalars; through the store they arrive as plain numbers, on the server too."""
    import bson

    database = fresh_databases()
    db = open_store(StoreSpec(kind="mongodb", uri=mongodb_uri, database=database))
    doc = {
        "objective": np.float64(0.25),
        "n": np.int64(3),
        "ok": np.bool_(True),
        "mse": {"pdf": np.float32(0.5)},
        "y": np.linspace(0, 1, 4),
        "rows": [np.arange(2), (np.int32(1), 2.0)],
    }
    with pytest.raises(bson.errors.InvalidDocument):  # what would happen without the store's rule
        bson.encode(doc)
    db.evaluations.update_one({"_id": "e1"}, {"$setOnInsert": doc}, upsert=True)
    db.evaluations.update_one({"_id": "e1"}, {"$set": {"best": np.float64(0.125)}})
    db.evaluations.insert_one({"_id": "e2", "objective": np.float16(1.5)})
    with mongo_client(mongodb_uri, serverSelectionTimeoutMS=5000) as c:
        raw = c[database].evaluations.find_one({"_id": "e1"})
        raw2 = c[database].evaluations.find_one({"_id": "e2"})
    assert raw is not None and raw2 is not None
    assert raw["objective"] == 0.25 and type(raw["objective"]) is float
    assert type(raw["n"]) is int and raw["ok"] is True and raw["mse"] == {"pdf": 0.5}
    assert raw["y"] == pytest.approx([0, 1 / 3, 2 / 3, 1]) and raw["rows"] == [[0, 1], [1, 2.0]]
    assert raw["best"] == 0.125 and raw2["objective"] == 1.5
    db.close()


def test_a_structure_over_16_mb_goes_to_gridfs(mongodb_uri, fresh_databases, linio2):
    """A 108,000-atom supercell: its document would be over MongoDB's 16 MiB; the structure goes to GridFS."""
    import bson
    from pymatgen.core import Structure

    big = linio2 * (10, 15, 60)  # 12 atoms × 9,000
    assert len(big) == 108_000
    as_dict = big.as_dict()
    size = len(bson.encode({"structure": as_dict}))
    assert size > 16 * 2**20, size  # over the server's limit as one document
    database = fresh_databases()
    db = open_store(StoreSpec(kind="mongodb", uri=mongodb_uri, database=database))
    doc = {"campaign": "big", "iteration": 1, "candidate": 0, "structure": as_dict, "fingerprint": "f"}
    db.proposals.update_one({"_id": "big:0001:000"}, {"$setOnInsert": doc}, upsert=True)  # as add_proposals
    db.proposals.update_one(
        {"_id": "big:0001:000"}, {"$setOnInsert": doc}, upsert=True
    )  # a rerun: no new blob
    with mongo_client(mongodb_uri, serverSelectionTimeoutMS=5000) as c:
        raw = c[database].proposals.find_one({"_id": "big:0001:000"})
        files = list(c[database]["blobs.files"].find({}, {"filename": 1, "length": 1}))
    assert raw is not None
    ref = raw["structure"]
    assert set(ref) == {"aso_blob", "bytes"} and ref["aso_blob"].startswith("gridfs:docs/proposals/")
    assert raw["campaign"] == "big" and raw["iteration"] == 1  # the small fields stay queryable
    assert len(files) == 1 and files[0]["length"] == ref["bytes"] > INLINE_LIMIT
    back = db.proposals.find_one({"_id": "big:0001:000"})
    assert back is not None
    assert back["structure"]["sites"] == as_dict["sites"]  # (a BSON round trip makes tuples lists)
    rebuilt = Structure.from_dict(back["structure"])  # (Structure.__eq__ is quadratic: compare arrays)
    assert rebuilt.lattice == big.lattice and np.array_equal(rebuilt.cart_coords, big.cart_coords)
    (listed,) = list(db.proposals.find({"campaign": "big"}).sort("candidate", 1))
    assert listed["structure"]["sites"][-1] == as_dict["sites"][-1] and len(
        listed["structure"]["sites"]
    ) == len(big)
    db.close()


# ---- access: wrong password, unreachable, TLS --------------------------------------------------------------
def test_wrong_password_is_one_line_within_5_s(mongodb_uri, fresh_databases, tmp_path, fault_ledger):
    """aso run / submit / status / webgui with a wrong password: one line each, well within 5 s."""
    from urllib.parse import quote_plus, urlsplit, urlunsplit

    parts = urlsplit(mongodb_uri)
    if parts.username is None:
        pytest.skip("the tier's server has no authentication")
    secret = f"wrong-{uuid.uuid4().hex[:8]}"
    host = parts.netloc.rsplit("@", 1)[-1]
    bad = urlunsplit(parts._replace(netloc=f"{parts.username}:{quote_plus(secret)}@{host}"))
    lp_file = launchpad_yaml(tmp_path / "lp" / "my_launchpad.yaml", bad, fresh_databases())
    store = {"kind": "mongodb", "uri": bad, "database": fresh_databases()}
    yml = campaign_yaml(tmp_path, "pw", optimizer="random", budget=4, store=store)
    cases = {
        "aso run": ["run", str(yml), "-q"],
        "aso status": ["status", str(yml)],
        "aso submit": [
            "submit",
            str(yml),
            "--launchpad",
            str(lp_file),
            "--qadapter-cpu",
            str(REPO / "launchpad" / "my_qadapter_cpu.yaml"),
            "--qadapter-gpu",
            str(REPO / "launchpad" / "my_qadapter_gpu.yaml"),
        ],
        "aso webgui": ["webgui", "-l", str(lp_file), "--port", "0"],
    }
    for what, args in cases.items():
        fault_ledger.inject("bad-input:credentials", f"{what}, wrong password on the real server")
        runner.invoke(app, args)  # the first call in this process pays for importing the command's modules
        t0 = time.perf_counter()
        result = runner.invoke(app, args)
        elapsed = time.perf_counter() - t0
        lines = result.stderr.strip().splitlines()
        ok = (
            result.exit_code == 2
            and len(lines) == 1
            and "refused the credentials" in lines[0]
            and secret not in result.output
            and elapsed < WITHIN_S
        )
        fault_ledger.verify("bad-input:credentials", ok, f"{what}: {elapsed:.2f} s: {result.stderr[:120]}")
        line = one_line(result.stderr, result.exit_code)
        assert "refused the credentials" in line and "Authentication failed" in line, (what, line)
        assert secret not in result.output, what
        assert elapsed < WITHIN_S, (what, elapsed)


def _make_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A certificate authority and a server certificate for 127.0.0.1/localhost it signed: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aso-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths[2].chmod(0o600)
    return paths


def test_tls_with_a_ca_made_here(private_ferretdb, tmp_path, fault_ledger):
    """A TLS-only server whose certificate our own CA signed: the store and the LaunchPad connect with the CA
    file; without it (system CAs) or without TLS: one line within 5 s."""
    from aso_workflows.cluster.launchpad import load_launchpad

    ca, cert, key = _make_ca(tmp_path / "pki")
    server = private_ferretdb("tls", tls_cert=cert, tls_key=key, client_ca=ca)  # no client certificates
    uri = server.uri("aso") + f"&tlsCAFile={ca}"
    db = open_store(StoreSpec(kind="mongodb", uri=uri, database="aso"))
    db.evaluations.insert_one({"_id": "tls", "objective": 1.0})
    stored = db.evaluations.find_one({"_id": "tls"})
    assert stored is not None and stored["objective"] == 1.0
    db.close()
    lp_file = launchpad_yaml(
        tmp_path / "my_launchpad.yaml", server.uri(), "fireworks", tls=True, tlsCAFile=str(ca)
    )
    lp = load_launchpad(lp_file)
    lp.reset("", require_password=False)
    assert lp.workflows.count_documents({}) == 0
    ctx = lp.connection.options.pool_options._ssl_context
    assert ctx is not None and ctx.check_hostname

    untrusted = server.uri("aso")  # tls=true, system CAs: our CA is unknown to them
    plain = server.uri("aso").replace("&tls=true", "")
    for what, bad, needle in (
        ("unknown CA", untrusted, "certificate verify failed"),
        ("no TLS", plain, "not reachable within 5 s"),
    ):
        fault_ledger.inject("bad-input:tls", what)
        t0 = time.perf_counter()
        with pytest.raises(InputError) as err:
            open_store(StoreSpec(kind="mongodb", uri=bad, database="aso"))
        elapsed = time.perf_counter() - t0
        msg = str(err.value)
        ok = "\n" not in msg and needle in msg and server.password not in msg and elapsed < WITHIN_S + 1.0
        fault_ledger.verify("bad-input:tls", ok, f"{what}: {elapsed:.1f} s: {msg[:140]}")
        assert "\n" not in msg and needle in msg and server.password not in msg, (what, msg)
        assert elapsed < WITHIN_S + 1.0, (what, elapsed)


# ---- one controller per campaign ---------------------------------------------------------------------------
def _leases(spec: StoreSpec, name: str):
    return open_store(spec).leases.find_one({"_id": name})


@pytest.mark.parametrize("kind", ["embedded", "mongodb"])
def test_a_second_controller_refuses(kind, tmp_path, fault_ledger, request):
    """``aso run`` drives a campaign; a second ``aso run`` and an ``aso resume`` of it refuse in one line;
    once the first is killed, ``aso resume`` takes the lease over and finishes: nothing lost or duplicated."""
    from aso_workflows.campaign.state import CampaignState, get_db
    from aso_workflows.config import load_config

    if kind == "mongodb":
        uri = request.getfixturevalue("mongodb_uri")
        database = request.getfixturevalue("fresh_databases")()
        store = {"kind": "mongodb", "uri": uri, "database": database}
    else:
        store = {"kind": "embedded"}
    yml = campaign_yaml(tmp_path, "lease", optimizer="random", budget=60, batch_size=2, store=store)
    cfg = load_config(yml)
    spec = cfg.store_spec()
    first = subprocess.Popen([*ASO, "run", str(yml), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert first.stderr is not None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (_leases(spec, "lease") is None or not _has_evaluations(spec)):
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.1)
        holder = _leases(spec, "lease")["holder"]
        assert holder.split(":")[1] == str(first.pid)
        for what in ("run", "resume"):
            fault_ledger.inject("second_controller", f"aso {what} while aso run drives the campaign ({kind})")
            args = [*ASO, what, str(yml), "-q"]
            second = subprocess.run(args, capture_output=True, text=True, timeout=120)
            refused = second.returncode == 2 and "is already driven by another controller" in second.stderr
            fault_ledger.verify("second_controller", refused and first.poll() is None, second.stderr[:140])
            line = one_line(second.stderr, second.returncode)
            assert "is already driven by another controller" in line and holder in line, line
            assert first.poll() is None, "the first controller must still be running"
        assert first.poll() is None, "the first controller finished before it could be killed"
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
        first.wait()
    fault_ledger.inject("controller_sigkill", f"aso run holding the lease, killed ({kind})")
    assert open_store(spec).evaluations.count_documents({"campaign": "lease"}) < cfg.budget
    done = subprocess.run([*ASO, "resume", str(yml), "-q"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "took over the lease" in done.stderr, (done.stdout[-3000:], done.stderr[-3000:])
    state = CampaignState.load(get_db(spec), "lease")
    assert state.doc["status"] == "completed" and state.n_used() == cfg.budget
    assert _leases(spec, "lease") is None  # released at the end
    assert fault_ledger.verify_campaign("controller_sigkill", state, detail=f"{kind}: lease taken over")


def _has_evaluations(spec: StoreSpec) -> bool:
    return open_store(spec).evaluations.count_documents({"campaign": "lease"}) >= 2


# ---- the server stopped and restarted under a running campaign ---------------------------------------------
def test_server_restart_under_a_local_campaign(private_ferretdb, tmp_path, fault_ledger):
    """``aso run`` with its store on a server that is stopped mid-campaign: it stops with one line saying
    how to go on; the server comes back with its data, the same command finishes; 0 lost, 0 duplicated."""
    from aso_workflows.campaign.state import CampaignState, get_db
    from aso_workflows.config import load_config

    server = private_ferretdb("restart")
    store = {"kind": "mongodb", "uri": server.uri(), "database": "aso", "timeout_ms": 2000}
    yml = campaign_yaml(tmp_path, "restart", optimizer="random", budget=14, batch_size=2, store=store)
    cfg = load_config(yml)
    spec = cfg.store_spec()
    proc = subprocess.Popen(
        [*ASO, "run", str(yml), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    deadline = time.time() + 120
    while time.time() < deadline and not _count(spec, "restart") >= 3:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.1)
    fault_ledger.inject(
        "database_restart", "FerretDB stopped under aso run (local), restarted after it stopped"
    )
    server.stop()
    out, err = proc.communicate(timeout=180)
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert proc.returncode != 0 and len(lines) == 1, err[-3000:]
    assert "not reachable" in lines[0] or "run the same command again" in lines[0], lines[0]
    assert server.password not in out + err
    server.start()
    done = subprocess.run([*ASO, "run", str(yml), "-q"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    state = CampaignState.load(get_db(spec), "restart")
    assert state.doc["status"] == "completed" and state.n_used() == cfg.budget
    assert fault_ledger.verify_campaign("database_restart", state, detail=f"local: {lines[0][:90]}")


def _count(spec: StoreSpec, name: str) -> int:
    assert spec.uri is not None  # a mongodb store
    with mongo_client(spec.uri, serverSelectionTimeoutMS=2000) as c:
        return c[spec.database].evaluations.count_documents({"campaign": name})
