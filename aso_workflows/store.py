"""Campaign state in a MongoDB-compatible document store.

One schema, three backends:

- **embedded** (default on a laptop): montydb on SQLite in the campaign directory. No server; several
  processes on one machine (or on a shared disk) may open it at once.
- **mongodb**: a real MongoDB given by URI (``mongodb://`` or ``mongodb+srv://``), for clusters.
- **mongomock**: in-process only, for tests (never shared through a file between processes).

Collections (see ``docs/results.md``):

``campaigns``
    ``_id`` = campaign name; config, target spectra, status, budget used.
``evaluations``
    One document per evaluated candidate structure: ``_id`` = campaign + structure fingerprint + hash of
    the simulator settings of all techniques, so a rerun never duplicates one.
``spectra``
    Cache of simulated spectra keyed by fingerprint + technique + settings hash (shared by campaigns).
``models``
    One document per (campaign, iteration, technique): training metrics and a reference to the weights.
``proposals``
    Candidates per (campaign, iteration, candidate index) with predicted mean/uncertainty.

Large binary objects (surrogate weights) go to a blob store: files for the embedded store, GridFS for
MongoDB, so no document approaches MongoDB's 16 MB limit.
"""

from __future__ import annotations

import io
import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aso_workflows.errors import InputError

__all__ = ["StoreSpec", "CampaignDB", "open_store"]

COLLECTIONS = ("campaigns", "evaluations", "spectra", "models", "proposals", "job_errors")

# Indexes for the queries users make (docs/results.md). montydb accepts and ignores what it cannot use.
INDEXES: dict[str, list[list[tuple[str, int]]]] = {
    "evaluations": [
        [("campaign", 1), ("iteration", 1), ("candidate", 1)],
        [("campaign", 1), ("objective", 1)],
        [("campaign", 1), ("status", 1)],
        [("fingerprint", 1)],
    ],
    "spectra": [[("fingerprint", 1), ("technique", 1)]],
    "models": [[("campaign", 1), ("iteration", 1)]],
    "proposals": [[("campaign", 1), ("iteration", 1)], [("campaign", 1), ("status", 1)]],
    "campaigns": [[("status", 1)]],
    "job_errors": [[("campaign", 1), ("created", 1)]],
}


@dataclass
class StoreSpec:
    """How to open the campaign store; small and JSON-able so jobs on other processes can open it too.

    Attributes
    ----------
    kind
        ``"embedded"``, ``"mongodb"`` or ``"mongomock"``.
    path
        Directory of the embedded store.
    uri
        MongoDB URI (credentials may be inside; they are never printed: see ``redacted()``).
    database
        Database name.
    timeout_ms
        Server selection timeout: an unreachable MongoDB fails within this time with one line.
    password_file
        File holding the MongoDB password (the URI then names only the user: ``mongodb://user@host/``).
        The spec, which travels inside every job and Firework, then carries the file's path, never the
        password; each job reads the file when it connects (it must be on a disk the jobs see, mode 600).
    """

    kind: Literal["embedded", "mongodb", "mongomock"] = "embedded"
    path: str | None = None
    uri: str | None = None
    database: str = "aso"
    timeout_ms: int = 5000
    password_file: str | None = None

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "path": self.path,
            "uri": self.uri,
            "database": self.database,
            "timeout_ms": self.timeout_ms,
            "password_file": self.password_file,
        }

    @classmethod
    def from_dict(cls, d: dict) -> StoreSpec:
        return cls(**{k: v for k, v in d.items() if not k.startswith("@")})

    def redacted(self) -> str:
        """A printable description with any password masked."""
        if self.kind == "embedded":
            return f"embedded store at {self.path}"
        if self.kind == "mongomock":
            return f"in-process mongomock database {self.database}"
        return f"MongoDB {redact_uri(self.uri or '')} database {self.database}"


def read_password_file(path: str | Path, field: str = "store.password_file") -> str:
    """The password in ``path`` (first line, surrounding whitespace stripped); one-line error otherwise."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(f"{field} ({p})", f"cannot read the password file ({reason})") from None
    if not lines or not lines[0].strip():
        raise InputError(f"{field} ({p})", "the password file is empty (expected the password on line 1)")
    return lines[0].strip()


def redact_uri(uri: str) -> str:
    """``mongodb://user:secret@host`` → ``mongodb://user:***@host`` (any scheme, anywhere in the text)."""
    import re

    return re.sub(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]+):[^@\s]*@", r"\1:***@", uri)


class BlobStore(ABC):
    """Binary objects by name (surrogate weights)."""

    @abstractmethod
    def put(self, name: str, data: bytes) -> str:
        """Store ``data``; returns a reference string."""

    @abstractmethod
    def get(self, ref: str) -> bytes:
        """Bytes of a stored object."""

    @abstractmethod
    def exists(self, ref: str) -> bool: ...


class FileBlobStore(BlobStore):
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def put(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written blob
        return f"file:{name}"

    def get(self, ref: str) -> bytes:
        return (self.directory / ref.removeprefix("file:")).read_bytes()

    def exists(self, ref: str) -> bool:
        return (self.directory / ref.removeprefix("file:")).is_file()


class GridFSBlobStore(BlobStore):
    def __init__(self, db):
        import gridfs

        self.fs = gridfs.GridFS(db, collection="blobs")

    def put(self, name: str, data: bytes) -> str:
        for old in self.fs.find({"filename": name}):
            self.fs.delete(old._id)
        self.fs.put(data, filename=name)
        return f"gridfs:{name}"

    def get(self, ref: str) -> bytes:
        return self.fs.get_last_version(ref.removeprefix("gridfs:")).read()

    def exists(self, ref: str) -> bool:
        return self.fs.exists({"filename": ref.removeprefix("gridfs:")})


_MOCK_CLIENTS: dict[str, Any] = {}


class CampaignDB:
    """The campaign collections plus a blob store, on any of the three backends."""

    def __init__(self, spec: StoreSpec, db, blobs: BlobStore, client=None):
        self.spec = spec
        self.db = db
        self.blobs = blobs
        self._client = client
        for name in COLLECTIONS:
            setattr(self, name, db[name])

    def ensure_indexes(self) -> None:
        for coll, indexes in INDEXES.items():
            for keys in indexes:
                try:
                    self.db[coll].create_index(keys)
                except Exception:  # noqa: BLE001 - montydb lacks some index kinds; indexes are an optimisation
                    pass

    # ---- blobs ------------------------------------------------------------------------------
    def put_blob(self, name: str, data: bytes) -> str:
        return self.blobs.put(name, data)

    def get_blob(self, ref: str) -> bytes:
        return self.blobs.get(ref)

    def put_torch(self, name: str, obj) -> str:
        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        return self.put_blob(name, buf.getvalue())

    def close(self) -> None:
        if self._client is not None and self.spec.kind != "mongomock":
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass


def open_store(spec: StoreSpec | dict) -> CampaignDB:
    """Open (creating if needed) the campaign store described by ``spec``.

    Raises
    ------
    InputError
        With one line if the MongoDB server cannot be reached or the credentials are refused.
    """
    if isinstance(spec, dict):
        spec = StoreSpec.from_dict(spec)
    if spec.kind == "embedded":
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
        out = CampaignDB(spec, db, FileBlobStore(root / "blobs"), client)
    elif spec.kind == "mongomock":
        import mongomock
        import mongomock.gridfs

        mongomock.gridfs.enable_gridfs_integration()
        key = spec.uri or "default"
        client = _MOCK_CLIENTS.setdefault(key, mongomock.MongoClient())
        db = client[spec.database]
        out = CampaignDB(spec, db, GridFSBlobStore(db), client)
    elif spec.kind == "mongodb":
        import pymongo
        from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

        if not spec.uri:
            raise InputError("store.uri", "a MongoDB URI (mongodb://...) is required for kind 'mongodb'")
        auth = {"password": read_password_file(spec.password_file)} if spec.password_file else {}
        source = f"store.uri ({redact_uri(spec.uri)})"
        try:
            # pymongo only warns about an unknown or malformed URI option and then ignores it; a typo such
            # as `tsl=true` would silently mean no TLS, so such a warning is an error here
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                client = pymongo.MongoClient(spec.uri, serverSelectionTimeoutMS=spec.timeout_ms, **auth)
        except (ConfigurationError, ValueError, TypeError, UserWarning) as exc:  # nothing was contacted
            first = str(exc).split("\n")[0].split(" Did you mean")[0][:160].replace(spec.uri, "<uri>")
            raise InputError(
                source,
                f"not a valid MongoDB URI ({redact_uri(first)}); expected mongodb://[user@]host[:port]/",
            ) from None
        try:
            client.admin.command("ping")
            db = client[spec.database]
            db.list_collection_names()  # fails fast on wrong credentials / missing rights
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
        out = CampaignDB(spec, db, GridFSBlobStore(db), client)
    else:
        raise InputError(
            "store.kind", f"unknown store kind {spec.kind!r}; expected embedded, mongodb or mongomock"
        )
    out.ensure_indexes()
    return out
