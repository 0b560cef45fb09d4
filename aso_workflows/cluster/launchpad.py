"""Open the FireWorks LaunchPad: a MongoDB server (from a launchpad YAML file or a URI), or in-process
``mongomock`` for tests.

An unreadable file fails with one :class:`~aso_workflows.errors.InputError` line naming the file; an
unreachable server or refused credentials fail within ``timeout_ms`` with one line that never shows the
password (see ``launchpad/my_launchpad.yaml`` for the auth and TLS options).
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aso_workflows.errors import InputError
from aso_workflows.store import redact_uri

__all__ = ["load_launchpad", "mongomock_launchpad", "check_launchpad", "describe_launchpad"]

_URI_SCHEMES = ("mongodb://", "mongodb+srv://")
_PATCH_LOCK = threading.Lock()


def describe_launchpad(lp) -> str:
    """A printable one-line description of ``lp`` (host and database, password masked)."""
    host = redact_uri(str(lp.host)) if getattr(lp, "uri_mode", False) else f"{lp.host}:{lp.port}"
    return f"MongoDB {host} database {lp.name}"


def load_launchpad(
    path_or_uri: str | Path, timeout_ms: int = 5000, check: bool = True, database: str | None = None
):
    """A FireWorks ``LaunchPad`` from a ``my_launchpad.yaml`` file or a ``mongodb://`` / ``mongodb+srv://`` URI.

    Parameters
    ----------
    path_or_uri
        A launchpad YAML (or JSON) file as FireWorks writes it (``lpad init``), or a MongoDB URI whose path
        names the database (``mongodb://user:pw@host/fireworks?authSource=admin&tls=true``; default
        database ``fireworks``).
    timeout_ms
        ``serverSelectionTimeoutMS`` for the connection unless the file sets its own in
        ``mongoclient_kwargs``: an unreachable server fails after this long.
    check
        Ping the server and list the database's collections (which needs valid credentials) now.
    database
        Use this database instead of the one the URI or file names.

    Raises
    ------
    InputError
        One line: the file cannot be read or is not a launchpad file, or MongoDB is unreachable or refuses
        the credentials.
    """
    from fireworks import LaunchPad

    text = str(path_or_uri)
    if text.startswith(_URI_SCHEMES):
        source = redact_uri(text)
        try:
            database = database or unquote(urlsplit(text).path.lstrip("/")) or "fireworks"
            lp = LaunchPad(
                host=text,
                name=database,
                uri_mode=True,
                mongoclient_kwargs={"serverSelectionTimeoutMS": timeout_ms},
            )
        except Exception as exc:  # noqa: BLE001 - pymongo's URI errors: ConfigurationError, InvalidURI, ValueError
            raise InputError(source, f"not a valid MongoDB URI ({_first_line(exc, text)})") from None
    else:
        path = Path(text)
        source = str(path)
        if not path.is_file():
            raise InputError(
                source, "launchpad file not found (expected my_launchpad.yaml or a mongodb:// URI)"
            )
        try:
            from monty.serialization import loadfn

            d = loadfn(path)
        except Exception as exc:  # noqa: BLE001 - YAML/JSON parse errors of several kinds
            raise InputError(
                source, f"not a readable YAML/JSON launchpad file ({_first_line(exc)})"
            ) from None
        if not isinstance(d, dict) or "host" not in d and not d.get("uri_mode"):
            raise InputError(source, "not a launchpad file: expected a mapping with 'host' (and 'name', ...)")
        d = dict(d)
        kwargs = dict(d.get("mongoclient_kwargs") or {})
        kwargs.setdefault("serverSelectionTimeoutMS", timeout_ms)
        d["mongoclient_kwargs"] = kwargs
        if database:
            d["name"] = database
        try:
            lp = LaunchPad.from_dict(d)
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                source, f"invalid launchpad settings ({_first_line(exc, d.get('password'))})"
            ) from None
        source = f"{source} ({describe_launchpad(lp)})"
    if check:
        check_launchpad(lp, source)
    return lp


def check_launchpad(lp, source: str | None = None) -> None:
    """Ping the LaunchPad's server and list its collections; one-line :class:`InputError` on failure."""
    from pymongo.errors import OperationFailure, PyMongoError

    source = source or describe_launchpad(lp)
    timeout = (lp.mongoclient_kwargs or {}).get("serverSelectionTimeoutMS", 30000)
    secrets = (lp.password, lp.host if lp.uri_mode else None)
    try:
        lp.connection.admin.command("ping")
        lp.db.list_collection_names()
    except OperationFailure as exc:
        raise InputError(
            source, f"MongoDB refused the credentials or the operation (code {exc.code})"
        ) from None
    except PyMongoError as exc:
        raise InputError(
            source,
            f"MongoDB not reachable within {float(timeout) / 1000:g} s ({_first_line(exc, *secrets)})",
        ) from None


def mongomock_launchpad(name: str = "fireworks", reset: bool = True):
    """A LaunchPad on an in-process ``mongomock`` database (tests only: nothing is shared between processes).

    Offline mode (:class:`~aso_workflows.cluster.offline.SlurmOfflineExecutor`) keeps every LaunchPad call
    in the controller process, so this is enough to drive real Slurm jobs.
    """
    import mongomock
    import mongomock.gridfs
    from fireworks import LaunchPad
    from fireworks.core import launchpad as fw_launchpad

    mongomock.gridfs.enable_gridfs_integration()  # FireWorks opens a GridFS fallback collection
    # LaunchPad.__init__ builds its client from the module-level name `MongoClient`; swapping it for the
    # duration of the constructor keeps every other line of FireWorks' own initialisation.
    with _PATCH_LOCK:
        original = fw_launchpad.MongoClient
        fw_launchpad.MongoClient = mongomock.MongoClient
        try:
            lp = LaunchPad(name=name, strm_lvl="ERROR")
        finally:
            fw_launchpad.MongoClient = original
    if reset:
        lp.reset("", require_password=False)
    return lp


def _first_line(exc: Exception, *secrets) -> str:
    """The first line of an exception message, cut short, with any secret (password, URI) masked."""
    text = str(exc).split("\n")[0].split(", Timeout:")[0].split(" (configured timeouts")[0][:200]
    for secret in secrets:
        if secret:
            text = text.replace(str(secret), redact_uri(str(secret)) if "://" in str(secret) else "***")
    return redact_uri(text)
