"""pytest plugin: the real-MongoDB tier (tests marked ``mongodb``).

``ASO_TEST_MONGODB_URI`` names the server (``scripts/install_and_test.sh`` starts FerretDB and sets it; any
MongoDB works). Without it the tests that need it are skipped with the reason. Each test gets throw-away
databases (``aso_test_<random>``) that are dropped afterwards.

Some tests need a server of their own (stopped and restarted, TLS, the stock FerretDB build): the
``private_ferretdb`` fixture starts one with :class:`aso_workflows.testing.ferretdb.FerretDB` when the
binary can be built here (``go``), else skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

if TYPE_CHECKING:
    from pymongo import MongoClient

MONGODB_URI = os.environ.get("ASO_TEST_MONGODB_URI")
NO_SERVER = "needs a MongoDB server: set ASO_TEST_MONGODB_URI=mongodb://... (scripts/install_and_test.sh starts FerretDB)"


def mongo_client(uri: str, **options: Any) -> MongoClient[dict[str, Any]]:
    """``pymongo.MongoClient(uri, **options)``, typed as a client of plain ``dict`` documents."""
    import pymongo

    return pymongo.MongoClient(uri, **options)


@pytest.fixture(scope="session")
def mongodb_uri() -> str:
    """The tier's server URI (with credentials), or skip."""
    if not MONGODB_URI:
        pytest.skip(NO_SERVER)
    return MONGODB_URI


@pytest.fixture(scope="session")
def server_is_ferretdb(mongodb_uri) -> bool:
    """True when the tier's server is FerretDB (its ``buildInfo`` says so)."""
    with mongo_client(mongodb_uri, serverSelectionTimeoutMS=5000) as c:
        return "ferretdbVersion" in c.admin.command("buildInfo")


@pytest.fixture
def fresh_databases(mongodb_uri) -> Iterator[Callable[[str], str]]:
    """``make(prefix)`` → a new database name on the tier's server; all of them dropped at the end."""
    made: list[str] = []

    def make(prefix: str = "aso_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        made.append(name)
        return name

    yield make
    with mongo_client(mongodb_uri, serverSelectionTimeoutMS=5000) as c:
        for name in made:
            c.drop_database(name)


def launchpad_yaml(path: Path, uri: str, database: str, **mongoclient_kwargs) -> Path:
    """Write a ``my_launchpad.yaml`` in FireWorks' host/port/username/password form for ``uri``."""
    parts = urlsplit(uri)
    query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
    doc = {
        "host": parts.hostname,
        "port": parts.port or 27017,
        "name": database,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "authsource": query.get("authSource", "admin") if parts.username else None,
        "mongoclient_kwargs": {"serverSelectionTimeoutMS": 5000, **mongoclient_kwargs},
        "strm_lvl": "WARNING",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def mongosh_path() -> str | None:
    """mongosh from ``$ASO_MONGOSH``, the PATH, or the npm cache of ``scripts/install_and_test.sh``."""
    from aso_workflows.testing.ferretdb import CACHE_DIR

    for candidate in (
        os.environ.get("ASO_MONGOSH"),
        shutil.which("mongosh"),
        str(CACHE_DIR / "mongosh-2.12.0" / "node_modules" / ".bin" / "mongosh"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def mongosh() -> str:
    path = mongosh_path()
    if path is None:
        pytest.skip("mongosh not installed (npm install mongosh; scripts/install_and_test.sh does it)")
    return path


@pytest.fixture
def private_ferretdb(tmp_path) -> Iterator[Callable[..., object]]:
    """``start(**kwargs)`` → a started :class:`FerretDB` of this test only (stopped at the end)."""
    from aso_workflows.testing.ferretdb import FerretDB, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    servers: list[FerretDB] = []

    def start(name: str = "ferretdb", **kwargs) -> FerretDB:
        server = FerretDB(tmp_path / name, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
