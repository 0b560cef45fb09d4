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

Every collection is reached through :class:`StoreCollection`, which keeps what a MongoDB server refuses
out of the writes, the same way on all three backends:

- numpy values (``np.float64``, ``np.int64``, ``np.bool_``, arrays) become Python numbers and lists, so
  they never reach BSON (pymongo refuses them; mongomock and montydb would store them silently);
- a document that would exceed :data:`INLINE_LIMIT` (a structure of a large supercell, a long spectrum)
  keeps its largest fields in the blob store (GridFS on MongoDB) with a small reference in their place,
  ``{"aso_blob": "gridfs:docs/<collection>/<sha1>", "bytes": N}``; reads through this class return the
  original values (pymongo users see the reference: ``docs/results.md``);
- a write the server refuses (FerretDB 1.x: arrays of arrays, infinities) is one line naming the
  collection, the server's reason and what to do (:class:`StoreRefused`).

A campaign is driven by one controller at a time: :meth:`CampaignDB.lease` takes a lease document in
``leases`` (renewed by a thread while the controller lives, released when it ends, taken over when it
expired or its holder died on this host); a second controller gets :class:`LeaseHeld`, one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import socket
import threading
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aso_workflows.errors import AsoError, InputError

__all__ = [
    "StoreSpec",
    "CampaignDB",
    "StoreCollection",
    "StoreRefused",
    "StoreUnavailable",
    "LeaseHeld",
    "Lease",
    "LeaseState",
    "lease_state",
    "open_store",
    "bson_safe",
    "server_refusal",
    "INLINE_LIMIT",
]

logger = logging.getLogger(__name__)

COLLECTIONS = ("campaigns", "evaluations", "spectra", "models", "proposals", "job_errors", "leases")

INLINE_LIMIT = 8 * 2**20
"""Encoded size (bytes) above which a document's largest fields go to the blob store (MongoDB: 16 MiB)."""
_BLOB_KEY = "aso_blob"

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


def unknown_uri_options(uri: str) -> list[str]:
    """The options in a MongoDB URI's query string that pymongo does not know (case-insensitive)."""
    from urllib.parse import parse_qsl, urlsplit

    from pymongo import common

    known = {
        k.lower()
        for table in ("URI_OPTIONS_VALIDATOR_MAP", "URI_OPTIONS_ALIAS_MAP", "URI_OPTIONS_DEPRECATION_MAP")
        for k in getattr(common, table, {})
    }
    try:
        query = urlsplit(uri).query
    except ValueError:
        return []
    return [k for k, _ in parse_qsl(query, keep_blank_values=True) if k.lower() not in known]


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

    @abstractmethod
    def ref(self, name: str) -> str:
        """The reference :meth:`put` returns for ``name``."""


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

    def ref(self, name: str) -> str:
        return f"file:{name}"

    def exists(self, ref: str) -> bool:
        return (self.directory / ref.removeprefix("file:")).is_file()


class GridFSBlobStore(BlobStore):
    def __init__(self, db: Any) -> None:
        import gridfs

        self.fs = gridfs.GridFS(db, collection="blobs")

    def put(self, name: str, data: bytes) -> str:
        for old in self.fs.find({"filename": name}):
            self.fs.delete(old._id)
        self.fs.put(data, filename=name)
        return f"gridfs:{name}"

    def get(self, ref: str) -> bytes:
        return self.fs.get_last_version(ref.removeprefix("gridfs:")).read()

    def ref(self, name: str) -> str:
        return f"gridfs:{name}"

    def exists(self, ref: str) -> bool:
        return self.fs.exists({"filename": ref.removeprefix("gridfs:")})


class StoreRefused(AsoError):
    """The database server refused a write (one line: collection, the server's reason, what to do)."""


class StoreUnavailable(AsoError, Exception):
    """The store's server stopped answering during a campaign (one line; nothing stored is lost)."""


def _unavailable(exc: Exception, spec: StoreSpec) -> StoreUnavailable:
    first = " ".join(str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0].split())[:160]
    return StoreUnavailable(
        f"{spec.redacted()} not reachable ({redact_uri(first)}); the campaign is intact in the store: "
        "run the same command again (or aso resume CAMPAIGN) once the server answers"
    )


@contextlib.contextmanager
def _reachable(spec: StoreSpec) -> Iterator[None]:
    """Turn a lost connection to the store's server into one :class:`StoreUnavailable` line."""
    from pymongo.errors import ConnectionFailure

    try:
        yield
    except ConnectionFailure as exc:
        raise _unavailable(exc, spec) from None


class LeaseHeld(AsoError):
    """Another controller holds the campaign's lease (one line: who, since when, until when)."""


def bson_safe(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists (recursively).

    Dicts and lists are rebuilt only where something changes, so clean documents cost one walk.
    """
    t = type(value)
    if t in (str, int, float, bool, type(None), bytes):
        return value
    if t is dict:
        out = None
        for k, v in value.items():
            w = bson_safe(v)
            if w is not v:
                if out is None:
                    out = dict(value)
                out[k] = w
        return value if out is None else out
    if t in (list, tuple):
        items = [bson_safe(v) for v in value]
        if t is list and all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items
    module = getattr(t, "__module__", "") or ""
    if module == "numpy" or module.startswith("numpy."):
        import numpy as np

        if isinstance(value, np.ndarray):
            return bson_safe(value.tolist())
        if isinstance(value, np.generic):
            return value.item()
    if isinstance(value, dict):  # OrderedDict, SON, ...: keep the type, clean the values
        return type(value)((k, bson_safe(v)) for k, v in value.items())
    return value


def _bson_size(doc: dict) -> int:
    import bson

    return len(bson.encode(doc))


class StoreCollection:
    """One campaign collection, on any backend, with the write/read rules of the module docstring.

    Every attribute not defined here is the backend collection's own (``count_documents``,
    ``create_index``, ``delete_one`` ...).
    """

    def __init__(self, collection: Any, owner: CampaignDB) -> None:
        self._coll = collection
        self._owner = owner
        self.name = collection.name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._coll, attr)
        if not callable(value):
            return value
        spec = self._owner.spec

        def call(*args: Any, **kwargs: Any) -> Any:
            with _reachable(spec):
                return value(*args, **kwargs)

        return call

    def __repr__(self) -> str:
        return f"StoreCollection({self.name!r}, {self._owner.spec.redacted()})"

    # ---- writes ---------------------------------------------------------------------------------
    def _prepare(self, doc: dict) -> dict:
        """A BSON-safe copy of a document (or of an update's ``$set`` part) under :data:`INLINE_LIMIT`."""
        doc = bson_safe(doc)
        if not isinstance(doc, dict) or _bson_size(doc) <= INLINE_LIMIT:
            return doc
        import bson

        doc = dict(doc)
        sizes = {k: _bson_size({"v": v}) for k, v in doc.items() if k != "_id"}
        for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
            if _bson_size(doc) <= INLINE_LIMIT or sizes[key] < 4096:
                break
            data = bson.encode({"v": doc[key]})
            name = f"docs/{self.name}/{hashlib.sha1(data).hexdigest()}"
            ref = self._owner.blobs.ref(name)
            if not self._owner.blobs.exists(ref):  # content-addressed: a rerun writes nothing new
                ref = self._owner.blobs.put(name, data)
            doc[key] = {_BLOB_KEY: ref, "bytes": len(data)}
        return doc

    def _prepare_update(self, update: dict | list) -> Any:
        if not isinstance(update, dict):  # an aggregation-pipeline update: only numpy cleaned
            return bson_safe(update)
        out = {}
        for op, fields in update.items():
            out[op] = self._prepare(fields) if op in ("$set", "$setOnInsert") else bson_safe(fields)
        return out

    def _write(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from pymongo.errors import ConnectionFailure

        try:
            return getattr(self._coll, method)(*args, **kwargs)
        except ConnectionFailure as exc:
            raise _unavailable(exc, self._owner.spec) from None
        except Exception as exc:
            raise _refused(exc, self) from None

    def insert_one(self, document: dict, *args: Any, **kwargs: Any) -> Any:
        return self._write("insert_one", self._prepare(document), *args, **kwargs)

    def insert_many(self, documents: Iterable[dict], *args: Any, **kwargs: Any) -> Any:
        return self._write("insert_many", [self._prepare(d) for d in documents], *args, **kwargs)

    def replace_one(self, filter: dict, replacement: dict, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
        return self._write("replace_one", bson_safe(filter), self._prepare(replacement), *args, **kwargs)

    def update_one(self, filter: dict, update: dict | list, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
        return self._write("update_one", bson_safe(filter), self._prepare_update(update), *args, **kwargs)

    def update_many(self, filter: dict, update: dict | list, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
        return self._write("update_many", bson_safe(filter), self._prepare_update(update), *args, **kwargs)

    # ---- reads ----------------------------------------------------------------------------------
    def _resolve(self, doc: Any) -> Any:
        if not isinstance(doc, dict):
            return doc
        refs = [k for k, v in doc.items() if isinstance(v, dict) and _BLOB_KEY in v and len(v) <= 2]
        if not refs:
            return doc
        import bson

        doc = dict(doc)
        for key in refs:
            doc[key] = bson.decode(self._owner.blobs.get(doc[key][_BLOB_KEY]))["v"]
        return doc

    def find_one(self, *args: Any, **kwargs: Any) -> dict | None:
        with _reachable(self._owner.spec):
            return self._resolve(self._coll.find_one(*args, **kwargs))

    def find(self, *args: Any, **kwargs: Any) -> _Cursor:
        with _reachable(self._owner.spec):
            return _Cursor(self._coll.find(*args, **kwargs), self._resolve, self._owner.spec)


class _Cursor:
    """A backend cursor whose documents are resolved (:meth:`StoreCollection._resolve`) as they come."""

    def __init__(self, cursor: Any, resolve: Callable[[Any], Any], spec: StoreSpec) -> None:
        self._cursor = cursor
        self._resolve = resolve
        self._spec = spec

    def __iter__(self) -> Iterator[dict]:
        with _reachable(self._spec):
            for d in self._cursor:
                yield self._resolve(d)

    def __next__(self) -> dict:
        with _reachable(self._spec):
            return self._resolve(next(self._cursor))

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._cursor, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            with _reachable(self._spec):
                out = value(*args, **kwargs)
            return _Cursor(out, self._resolve, self._spec) if out is self._cursor else out

        return call


# Server codes of a document refused for what it holds: BadValue (FerretDB's nested arrays, infinities),
# BSONObjectTooLarge, document too large to insert.
_REFUSAL_CODES = {2, 10334, 17419, 17420}


def _refused(exc: Exception, coll: StoreCollection) -> Exception:
    """A server's refusal of a write as one :class:`StoreRefused` line; other exceptions unchanged."""
    return (
        server_refusal(exc, f"{coll._owner.spec.redacted()}: the server refused a write to '{coll.name}'")
        or exc
    )


def server_refusal(exc: Exception, where: str) -> StoreRefused | None:
    """:class:`StoreRefused` (one line: ``where``, the server's code and reason, what to do) when ``exc``
    is a MongoDB server refusing a document for what it holds; None for any other exception."""
    details = getattr(exc, "details", None) or {}
    errors = details.get("writeErrors") or []
    msg = (errors[0].get("errmsg") if errors else None) or details.get("errmsg")
    code = (errors[0].get("code") if errors else None) or getattr(exc, "code", None)
    if not msg or type(exc).__module__.split(".")[0] != "pymongo" or code not in _REFUSAL_CODES:
        return None  # duplicate keys, lost connections ...: the caller's business
    hint = "expected a MongoDB server (docs/cluster.md, compatibility table)"
    if "nested arrays are not supported" in msg:
        hint = (
            "FerretDB 1.x stores no arrays of arrays (a structure's lattice matrix is one); "
            "use MongoDB, or FerretDB built with the patch in docs/cluster.md"
        )
    elif "infinity values are not allowed" in msg:
        hint = "FerretDB 1.x stores no infinite numbers; use MongoDB"
    first = " ".join(str(msg).split())
    if len(first) > 200:
        first = first[:120] + " … " + first[-60:]
    return StoreRefused(f"{where} (code {code}: {first}); {hint}")


@dataclass
class Lease:
    """This process's hold on a campaign (see :meth:`CampaignDB.lease`)."""

    campaign: str
    holder: str
    ttl: float
    acquired: float
    took_over: str | None = None  # the previous holder, when its lease had expired or it had died
    lost: bool = False


def _holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_alive(holder: str) -> bool | None:
    """Whether the process of ``holder`` lives (True/False on this host; None: another host, unknown)."""
    host, _, rest = holder.partition(":")
    pid = rest.split(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@dataclass
class LeaseState:
    """Who drives a campaign now, as its lease says (see :meth:`CampaignDB.controller`).

    ``live`` is True while a controller holds an unexpired lease and its process is not known to be
    gone (on another host that cannot be checked: the lease's expiry decides); ``alive`` is the
    process check itself (None: another host). Times are seconds since the epoch; all but ``live`` and
    ``reason`` are None when no lease document exists.
    """

    live: bool
    reason: str
    holder: str | None = None
    host: str | None = None
    pid: int | None = None
    acquired: float | None = None
    renewed: float | None = None
    expires: float | None = None
    alive: bool | None = None


def lease_state(doc: dict | None, now: float | None = None) -> LeaseState:
    """Read a ``leases`` document (or its absence) as a :class:`LeaseState`, with a one-line reason."""
    now = time.time() if now is None else now
    if not doc:
        return LeaseState(False, "no controller holds the campaign's lease (none was started, or it ended)")
    holder = str(doc.get("holder", ""))
    host, _, rest = holder.partition(":")
    pid = rest.split(":")[0]
    alive = _holder_alive(holder)
    expires = float(doc.get("expires", 0.0))
    who = f"pid {pid} on {host}" if pid.isdigit() else holder
    if alive is False:
        live, reason = False, f"its controller ({who}) is gone: killed or crashed without releasing the lease"
    elif expires <= now:
        live = False
        reason = f"its controller ({who}) stopped renewing the lease at {_when(float(doc.get('renewed', expires)))}"
        reason += ": killed, its host lost, or the store unreachable from it"
    else:
        live, reason = True, f"driven by the controller {who} since {_when(float(doc.get('acquired', now)))}"
    return LeaseState(
        live=live,
        reason=reason,
        holder=holder,
        host=host or None,
        pid=int(pid) if pid.isdigit() else None,
        acquired=doc.get("acquired"),
        renewed=doc.get("renewed"),
        expires=expires,
        alive=alive,
    )


_MOCK_CLIENTS: dict[str, Any] = {}


class CampaignDB:
    """The campaign collections plus a blob store, on any of the three backends."""

    campaigns: StoreCollection
    evaluations: StoreCollection
    spectra: StoreCollection
    models: StoreCollection
    proposals: StoreCollection
    job_errors: StoreCollection
    leases: StoreCollection

    def __init__(self, spec: StoreSpec, db: Any, blobs: BlobStore, client: Any = None) -> None:
        self.spec = spec
        self.db = db
        self.blobs = blobs
        self._client = client
        self.index_errors: list[str] = []
        for name in COLLECTIONS:
            setattr(self, name, StoreCollection(db[name], self))

    def ensure_indexes(self) -> None:
        """Create the indexes of :data:`INDEXES`; one that the server refuses is reported (a warning naming
        it and the reason: the queries still work, more slowly), never silently skipped."""
        for coll, indexes in INDEXES.items():
            for keys in indexes:
                try:
                    self.db[coll].create_index(keys)
                except Exception as exc:  # noqa: BLE001 - any refusal: reported, the store stays usable
                    reason = str(exc).split("\n")[0][:160]
                    logger.warning(
                        "store %s: index %s on %s not created (%s)", self.spec.redacted(), keys, coll, reason
                    )
                    self.index_errors.append(f"{coll} {keys}: {reason}")

    # ---- blobs ------------------------------------------------------------------------------
    def put_blob(self, name: str, data: bytes) -> str:
        with _reachable(self.spec):
            return self.blobs.put(name, data)

    def get_blob(self, ref: str) -> bytes:
        with _reachable(self.spec):
            return self.blobs.get(ref)

    def put_torch(self, name: str, obj: object) -> str:
        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        return self.put_blob(name, buf.getvalue())

    # ---- one controller per campaign ---------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self, campaign: str, ttl: float = 30.0) -> Iterator[Lease]:
        """Hold the campaign's lease while the block runs: one controller per campaign.

        The lease is a document ``leases/<campaign>`` with its holder (host:pid:random) and an expiry
        ``ttl`` seconds ahead, renewed every ``ttl / 3`` seconds by a daemon thread and deleted at the
        end. A lease held by a live controller is refused with :class:`LeaseHeld`; one whose expiry
        passed (its controller stopped renewing: killed, host lost, store unreachable for long) or whose
        holder's process is gone from this host is taken over (``Lease.took_over``). Taking a lease is a
        single keyed insert or a compare-and-set on the expired document, so two controllers starting
        together cannot both get it.
        """
        from pymongo.errors import DuplicateKeyError as PyDup

        duplicate: tuple[type[Exception], ...] = (PyDup,)  # each backend's DuplicateKeyError
        try:
            from montydb.errors import DuplicateKeyError as MontyDup

            duplicate += (MontyDup,)
        except ImportError:  # pragma: no cover - montydb is a dependency
            pass
        try:
            from mongomock import DuplicateKeyError as MockDup

            duplicate += (MockDup,)
        except ImportError:  # pragma: no cover
            pass

        me = _holder_id()
        coll = self.leases
        # the renewing thread's own handle: montydb's SQLite engine keeps one connection attribute per
        # client, so two threads sharing a client race on it ("SQLite objects created in a thread can
        # only be used in that same thread", seen in CI); pymongo's client is thread-safe
        renew_coll, renew_client = self._thread_handle("leases")
        now = time.time()
        lease = Lease(campaign=campaign, holder=me, ttl=ttl, acquired=now)
        from aso_workflows.schemas import LeaseDoc

        doc = LeaseDoc(_id=campaign, holder=me, expires=now + ttl, acquired=now, renewed=now)
        new = doc.to_mongo_fields()
        try:
            coll.insert_one(doc.to_mongo())
        except duplicate:
            old = coll.find_one({"_id": campaign}) or {}
            alive = _holder_alive(str(old.get("holder", "")))
            if old and old.get("expires", 0) > now and alive is not False:
                raise LeaseHeld(
                    f"campaign {campaign!r} is already driven by another controller ({old['holder']}, "
                    f"since {_when(old.get('acquired', now))}, lease renewed {_when(old.get('renewed', now))}); "
                    f"stop that one first, or wait {old['expires'] - now:.0f} s if it died on another host"
                ) from None
            # expired or dead: take it over, unless someone else was faster (compare-and-set)
            match = {"_id": campaign, "holder": old.get("holder"), "expires": old.get("expires")}
            if coll.update_one(match, {"$set": new}).modified_count != 1:
                raise LeaseHeld(
                    f"campaign {campaign!r}: another controller took its lease at the same moment; "
                    "only one may drive it"
                ) from None
            lease.took_over = str(old.get("holder"))
            logger.warning(
                "campaign %s: took over the lease of %s (%s)",
                campaign,
                lease.took_over,
                "its process is gone" if alive is False else "expired",
            )
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(ttl / 3):
                t = time.time()
                try:
                    res = renew_coll.update_one(
                        {"_id": campaign, "holder": me}, {"$set": {"expires": t + ttl, "renewed": t}}
                    )
                except Exception as exc:  # noqa: BLE001 - store unreachable: try again next time
                    logger.warning(
                        "campaign %s: lease not renewed (%s)", campaign, str(exc).split("\n")[0][:120]
                    )
                    continue
                if res.matched_count == 0 and not lease.lost:
                    lease.lost = True
                    logger.error("campaign %s: lease lost to another controller", campaign)

        thread = threading.Thread(target=renew, name=f"aso-lease-{campaign}", daemon=True)
        thread.start()
        try:
            yield lease
        finally:
            stop.set()
            thread.join(timeout=5)
            if renew_client is not None and not thread.is_alive():
                renew_client.close()
            with contextlib.suppress(Exception):
                coll.delete_one({"_id": campaign, "holder": me})

    def controller(self, campaign: str) -> LeaseState:
        """Whether a controller drives ``campaign`` now (its lease: holder, since when, alive or not)."""
        with _reachable(self.spec):
            return lease_state(self.leases.find_one({"_id": campaign}))

    def _thread_handle(self, name: str) -> tuple[Any, Any]:
        """``(collection, client)``: a handle on collection ``name`` for use by another thread, and the
        client to close after (None: the store's own, shared client is thread-safe)."""
        if self.spec.kind == "embedded":
            from montydb import MontyClient

            client = MontyClient(str(Path(str(self.spec.path)) / "db"))
            return StoreCollection(client[self.spec.database][name], self), client
        return getattr(self, name), None

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
        auth: dict[str, Any] = (
            {"password": read_password_file(spec.password_file)} if spec.password_file else {}
        )
        source = f"store.uri ({redact_uri(spec.uri)})"
        try:
            # pymongo only warns about an unknown or malformed URI option and then ignores it; a typo such
            # as `tsl=true` would silently mean no TLS, so such a warning is an error here
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                client = pymongo.MongoClient(spec.uri, serverSelectionTimeoutMS=spec.timeout_ms, **auth)
        except (ConfigurationError, ValueError, TypeError, UserWarning) as exc:  # nothing was contacted
            unknown = unknown_uri_options(spec.uri)
            if unknown:  # pymongo ≥ 4.20 no longer names the option
                first = "Unknown option: " + ", ".join(unknown)
            else:
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
