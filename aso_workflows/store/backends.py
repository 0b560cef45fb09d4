"""The three backends of the campaign store, and :func:`open_store`.

- **embedded** (default on a laptop): montydb on SQLite in the campaign directory, blobs as files. No
  server; several processes on one machine (or on a shared disk) may open it at once.
- **mongodb**: a real MongoDB given by URI (``mongodb://`` or ``mongodb+srv://``), blobs in GridFS, for
  clusters.
- **mongomock**: in-process only, for tests (never shared through a file between processes).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from aso_workflows.errors import InputError
from aso_workflows.store.blobs import FileBlobStore, GridFSBlobStore
from aso_workflows.store.campaign_db import COLLECTIONS, CampaignDB
from aso_workflows.store.spec import StoreSpec, read_password_file, redact_uri, unknown_uri_options

__all__ = ["open_store"]

_MOCK_CLIENTS: dict[str, Any] = {}
"""The in-process mongomock clients by URI: every open of one URI sees the same data."""


def open_store(spec: StoreSpec | dict[str, Any]) -> CampaignDB:
    """Open (creating if needed) the campaign store described by ``spec``.

    Raises
    ------
    InputError
        With one line if the MongoDB server cannot be reached or the credentials are refused.
    """
    if isinstance(spec, dict):
        spec = StoreSpec.from_dict(spec)
    openers = {"embedded": _open_embedded, "mongomock": _open_mongomock, "mongodb": _open_mongodb}
    if spec.kind not in openers:
        raise InputError(
            "store.kind", f"unknown store kind {spec.kind!r}; expected embedded, mongodb or mongomock"
        )
    out = openers[spec.kind](spec)
    out.ensure_indexes()
    return out


def _open_embedded(spec: StoreSpec) -> CampaignDB:
    """montydb on SQLite under ``spec.path/db``, blobs under ``spec.path/blobs``."""
    if not spec.path:
        raise InputError("store.path", "the embedded store needs a directory")
    from montydb import MontyClient, set_storage

    root = Path(spec.path)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"store.path ({root})",
            f"cannot create the embedded store folder ({exc.strerror or exc}); expected a writable folder",
        ) from None
    # Same storage options as maggma's MontyStore (pymongo's BSON): montydb fixes the BSON choice
    # once per process, and jobflow's JobStore opens a MontyStore in the same process.
    # Written once, by whoever creates the store: rewriting it from every job races with other jobs
    # reading it (a half-written config makes montydb fall back to its own BSON and refuse to open).
    if not (root / "db" / "monty.storage.cfg").is_file():
        set_storage(str(root / "db"), storage="sqlite", use_bson=True, mongo_version="4.0")
    client = MontyClient(str(root / "db"))
    db = client[spec.database]
    # montydb creates a collection's SQLite file before its table: a job reading a collection while
    # another creates it fails with "no such table". Create every table up front (the controller opens
    # the store before any job runs).
    for name in COLLECTIONS:
        if db[name].count_documents({}) == 0:
            db[name].insert_one({"_id": "__aso_init__"})
            db[name].delete_one({"_id": "__aso_init__"})
    return CampaignDB(spec, db, FileBlobStore(root / "blobs"), client)


def _open_mongomock(spec: StoreSpec) -> CampaignDB:
    """The in-process mongomock database of ``spec.uri`` (one client per URI), blobs in its GridFS."""
    import mongomock
    import mongomock.gridfs

    mongomock.gridfs.enable_gridfs_integration()
    key = spec.uri or "default"
    client = _MOCK_CLIENTS.setdefault(key, mongomock.MongoClient())
    db = client[spec.database]
    return CampaignDB(spec, db, GridFSBlobStore(db), client)


def _open_mongodb(spec: StoreSpec) -> CampaignDB:
    """A MongoDB server: the client built from the URI, then a ping and a listing that fail fast."""
    if not spec.uri:
        raise InputError("store.uri", "a MongoDB URI (mongodb://...) is required for kind 'mongodb'")
    client = _mongo_client(spec, spec.uri)
    db = _checked_database(spec, spec.uri, client)
    return CampaignDB(spec, db, GridFSBlobStore(db), client)


def _mongo_client(spec: StoreSpec, uri: str) -> Any:
    """pymongo's client for ``uri`` (nothing contacted yet); a malformed URI or option is one line."""
    import pymongo
    from pymongo.errors import ConfigurationError

    auth: dict[str, Any] = {"password": read_password_file(spec.password_file)} if spec.password_file else {}
    try:
        # pymongo only warns about an unknown or malformed URI option and then ignores it; a typo such
        # as `tsl=true` would silently mean no TLS, so such a warning is an error here
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            return pymongo.MongoClient(uri, serverSelectionTimeoutMS=spec.timeout_ms, **auth)
    except (ConfigurationError, ValueError, TypeError, UserWarning) as exc:  # nothing was contacted
        unknown = unknown_uri_options(uri)
        if unknown:  # pymongo ≥ 4.20 no longer names the option
            first = "Unknown option: " + ", ".join(unknown)
        else:
            first = str(exc).split("\n")[0].split(" Did you mean")[0][:160].replace(uri, "<uri>")
        raise InputError(
            f"store.uri ({redact_uri(uri)})",
            f"not a valid MongoDB URI ({redact_uri(first)}); expected mongodb://[user@]host[:port]/",
        ) from None


def _checked_database(spec: StoreSpec, uri: str, client: Any) -> Any:
    """The database of ``spec`` once the server answered and accepted the credentials (else one line,
    and the client closed)."""
    from pymongo.errors import OperationFailure, PyMongoError

    source = f"store.uri ({redact_uri(uri)})"
    try:
        client.admin.command("ping")
        db = client[spec.database]
        db.list_collection_names()  # fails fast on wrong credentials / missing rights
        return db
    except OperationFailure as exc:
        client.close()
        why = str((exc.details or {}).get("errmsg") or "").split("\n")[0][:120]
        raise InputError(
            source,
            f"MongoDB refused the credentials or the operation (code {exc.code}{': ' + why if why else ''}); "
            "expected a user with read/write rights on the database",
        ) from None
    except PyMongoError as exc:
        client.close()
        first = str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0].split("\n")[0][:160]
        raise InputError(
            source,
            f"MongoDB not reachable within {spec.timeout_ms / 1000:g} s ({redact_uri(first)}); "
            "expected a server answering at that host and port",
        ) from None
