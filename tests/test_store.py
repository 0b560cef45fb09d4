"""The campaign store on the embedded backend, mongomock, and a real MongoDB when one is given."""

from __future__ import annotations

import os
import time

import pytest

from aso_workflows.errors import InputError
from aso_workflows.store import StoreSpec, open_store, redact_uri

BACKENDS = ["embedded", "mongomock"] + (["mongodb"] if os.environ.get("ASO_TEST_MONGODB_URI") else [])


@pytest.fixture(params=BACKENDS)
def db(request, tmp_path):
    if request.param == "embedded":
        spec = StoreSpec(kind="embedded", path=str(tmp_path / "store"))
    elif request.param == "mongomock":
        spec = StoreSpec(kind="mongomock", uri=f"test-{tmp_path.name}", database="aso_test")
    else:
        spec = StoreSpec(
            kind="mongodb", uri=os.environ["ASO_TEST_MONGODB_URI"], database=f"aso_test_{tmp_path.name}"[:60]
        )
    store = open_store(spec)
    yield store
    if request.param == "mongodb":
        store._client.drop_database(spec.database)
    store.close()


def test_upsert_by_key_never_duplicates(db):
    for _ in range(3):
        db.evaluations.update_one(
            {"_id": "c:fp:key"}, {"$setOnInsert": {"campaign": "c", "objective": 1.0}}, upsert=True
        )
    assert db.evaluations.count_documents({"campaign": "c"}) == 1
    db.evaluations.update_one(
        {"_id": "c:fp:key"}, {"$setOnInsert": {"campaign": "c", "objective": 9.0}}, upsert=True
    )
    assert db.evaluations.find_one({"_id": "c:fp:key"})["objective"] == 1.0


def test_blob_round_trip(db):
    data = os.urandom(300_000)
    ref = db.put_blob("camp/model_0000_pdf.pt", data)
    assert db.get_blob(ref) == data
    ref2 = db.put_blob("camp/model_0000_pdf.pt", b"new")
    assert ref2 == ref and db.get_blob(ref) == b"new"


def test_embedded_store_is_shared_between_processes(tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "store")
    code = (
        "from aso_workflows.store import StoreSpec, open_store\n"
        f"db = open_store(StoreSpec(kind='embedded', path={path!r}))\n"
        "db.evaluations.insert_one({'_id': 'from-child', 'x': 1})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    db = open_store(StoreSpec(kind="embedded", path=path))
    child = db.evaluations.find_one({"_id": "from-child"})
    assert child is not None and child["x"] == 1


def test_unreachable_mongodb_fails_fast_with_one_line():
    t0 = time.perf_counter()
    with pytest.raises(InputError) as err:
        open_store(
            StoreSpec(
                kind="mongodb",
                uri="mongodb://user:s3cret@127.0.0.1:9/?directConnection=true",
                timeout_ms=1500,
            )
        )
    msg = str(err.value)
    assert time.perf_counter() - t0 < 10
    assert "\n" not in msg and "not reachable" in msg
    assert "s3cret" not in msg and "user:***@" in msg


def test_redact_uri():
    assert redact_uri("mongodb+srv://me:pw@host/db") == "mongodb+srv://me:***@host/db"
    assert redact_uri("mongodb://host:27017") == "mongodb://host:27017"
