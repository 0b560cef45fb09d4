"""Open the FireWorks LaunchPad on a MongoDB server, from a launchpad YAML file or a URI.

An unreadable file fails with one :class:`~aso_workflows.errors.InputError` line naming the file; an
unreachable server or refused credentials fail within ``timeout_ms`` with one line that never shows the
password (see ``launchpad/my_launchpad.yaml`` for the auth and TLS options).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from aso_workflows.errors import InputError
from aso_workflows.store import redact_uri, unknown_uri_options

if TYPE_CHECKING:
    from fireworks import LaunchPad

__all__ = ["load_launchpad", "check_launchpad", "describe_launchpad", "launchpad_reference"]

_URI_SCHEMES = ("mongodb://", "mongodb+srv://")


def describe_launchpad(lp: LaunchPad) -> str:
    """A printable one-line description of ``lp`` (host and database, password masked)."""
    host = redact_uri(str(lp.host)) if getattr(lp, "uri_mode", False) else f"{lp.host}:{lp.port}"
    return f"MongoDB {host} database {lp.name}"


def load_launchpad(
    path_or_uri: str | Path, timeout_ms: int = 5000, check: bool = True, database: str | None = None
) -> LaunchPad:
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
            with warnings.catch_warnings():  # an unknown URI option (`tsl=true`) is an error, not ignored
                warnings.simplefilter("error", UserWarning)
                lp = LaunchPad(
                    host=text,
                    name=database,
                    uri_mode=True,
                    mongoclient_kwargs={"serverSelectionTimeoutMS": timeout_ms},
                )
        except Exception as exc:  # noqa: BLE001 - pymongo's URI errors: ConfigurationError, InvalidURI, ValueError
            unknown = unknown_uri_options(text)  # pymongo ≥ 4.20 no longer names the option
            why = f"Unknown option: {', '.join(unknown)}" if unknown else _first_line(exc, text)
            raise InputError(source, f"not a valid MongoDB URI ({why})") from None
    else:
        path = Path(text).expanduser()
        source = str(path)
        d = _check_fields(_read_launchpad_file(path), source)
        kwargs = dict(d.get("mongoclient_kwargs") or {})
        kwargs.setdefault("serverSelectionTimeoutMS", timeout_ms)
        d["mongoclient_kwargs"] = kwargs
        if database:
            d["name"] = database
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                lp = LaunchPad.from_dict(d)
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                source, f"invalid launchpad settings ({_first_line(exc, d.get('password'))})"
            ) from None
        source = f"{source} ({describe_launchpad(lp)})"
    # where it came from, for launchpad_reference (aso submit records it, aso resume reopens it)
    lp.aso_reference = {
        "source": _without_password(text)
        if text.startswith(_URI_SCHEMES)
        else str(Path(text).expanduser().resolve()),
        "database": lp.name,
    }
    if check:
        check_launchpad(lp, source)
    return lp


def launchpad_reference(lp: LaunchPad) -> dict | None:
    """How to open ``lp`` again from another process, never with a password: ``{"source", "database"}``.

    ``source`` is the launchpad file's absolute path (which keeps the password, TLS and timeouts), or
    the URI it was opened from without its password (the user name stays). None for a LaunchPad not
    opened by :func:`load_launchpad` (e.g. an in-process test LaunchPad), which nothing can reopen.
    """
    ref = getattr(lp, "aso_reference", None)
    return dict(ref) if ref else None


def _without_password(uri: str) -> str:
    """``mongodb://user:pw@host/db`` → ``mongodb://user@host/db``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=f"{parts.username}@{host}").geturl()


# The fields of FireWorks' LaunchPad.from_dict and their YAML types (None is allowed for all but host).
_FIELDS: dict[str, type] = {
    "host": str,
    "port": int,
    "name": str,
    "username": str,
    "password": str,
    "authsource": str,
    "uri_mode": bool,
    "mongoclient_kwargs": dict,
    "logdir": str,
    "strm_lvl": str,
    "user_indices": list,
    "wf_user_indices": list,
}
# Top-level TLS fields of older FireWorks launchpad files (and of `lpad init`'s ssl_ca_file prompt).
# FireWorks 2 ignores them there without a word, which would mean a connection WITHOUT TLS; they are
# moved into mongoclient_kwargs under pymongo 4's names instead.
_LEGACY_TLS = {
    "ssl": "tls",
    "ssl_ca_certs": "tlsCAFile",
    "ssl_ca_file": "tlsCAFile",
    "ssl_certfile": "tlsCertificateKeyFile",
    "ssl_pem_passphrase": "tlsCertificateKeyFilePassword",
}


def _read_launchpad_file(path: Path) -> dict:
    """The mapping in a launchpad YAML/JSON file; one-line :class:`InputError` naming the file otherwise."""
    import yaml

    source = str(path)
    if path.is_dir():
        raise InputError(
            source, "is a directory; expected a launchpad file (my_launchpad.yaml) or a mongodb:// URI"
        )
    if not path.is_file():
        raise InputError(source, "launchpad file not found (expected my_launchpad.yaml or a mongodb:// URI)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise InputError(source, f"cannot be read ({reason}); expected a YAML launchpad file") from None
    try:
        d = yaml.safe_load(text)  # JSON launchpad files are YAML too
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(
            source,
            f"not a readable YAML/JSON launchpad file (invalid YAML{where}); expected host, port, name, ...",
        ) from None
    if not isinstance(d, dict) or ("host" not in d and not d.get("uri_mode")):
        raise InputError(source, "not a launchpad file: expected a mapping with 'host' (and 'name', ...)")
    return d


def _check_fields(d: dict, source: str) -> dict:
    """Check the fields' names and types (never echoing a value) and move legacy TLS fields into place.

    FireWorks reads a launchpad file with ``dict.get`` and passes wrong types on to pymongo, whose errors
    come late and may quote the value; a misspelt field (``authSource``) is silently ignored.
    """
    out = {k: v for k, v in d.items() if not str(k).startswith("@")}
    kwargs = out.get("mongoclient_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise InputError(
            source, "field 'mongoclient_kwargs': expected a mapping of pymongo.MongoClient options"
        )
    kwargs = dict(kwargs or {})
    for old, new in _LEGACY_TLS.items():
        if old in out:
            value = out.pop(old)
            if value is not None:
                kwargs.setdefault(new, value)
    if "ssl_keyfile" in out:
        raise InputError(
            source,
            "field 'ssl_keyfile': pymongo 4 needs the client certificate and its key in one PEM file; "
            "expected mongoclient_kwargs.tlsCertificateKeyFile",
        )
    unknown = sorted(str(k) for k in out if k not in _FIELDS)
    if unknown:
        raise InputError(
            source,
            f"unknown field(s) {unknown}; expected some of {list(_FIELDS)} "
            "(TLS and timeouts go in mongoclient_kwargs)",
        )
    for key, value in out.items():
        typ = _FIELDS[key]
        if value is None and key != "host":
            continue
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            hint = " (quote it in YAML)" if key == "password" else ""
            shown = "" if key in ("password", "host") else f", got {value!r}"
            raise InputError(source, f"field {key!r}: expected {_TYPE_WORDS[typ]}{hint}{shown}")
    if kwargs:
        out["mongoclient_kwargs"] = kwargs
    return out


_TYPE_WORDS = {
    str: "a string",
    int: "an integer (e.g. 27017)",
    bool: "true or false",
    dict: "a mapping",
    list: "a list",
}


def check_launchpad(lp: LaunchPad, source: str | None = None) -> None:
    """Ping the LaunchPad's server and list its collections; one-line :class:`InputError` on failure."""
    from pymongo.errors import OperationFailure, PyMongoError

    source = source or describe_launchpad(lp)
    timeout = (lp.mongoclient_kwargs or {}).get("serverSelectionTimeoutMS", 30000)
    secrets = (lp.password, lp.host if lp.uri_mode else None)
    try:
        lp.connection.admin.command("ping")
        lp.db.list_collection_names()
    except OperationFailure as exc:
        why = _first_line(Exception((exc.details or {}).get("errmsg") or ""), *secrets)
        raise InputError(
            source,
            f"MongoDB refused the credentials or the operation (code {exc.code}{': ' + why if why else ''}); "
            "expected username/password/authsource of a user with rights on the database",
        ) from None
    except PyMongoError as exc:
        raise InputError(
            source,
            f"MongoDB not reachable within {float(timeout) / 1000:g} s ({_first_line(exc, *secrets)})",
        ) from None


def _first_line(exc: Exception, *secrets: Any) -> str:
    """The first line of an exception message, cut short, with any secret (password, URI) masked."""
    text = str(exc).split("\n")[0].split(", Timeout:")[0].split(" (configured timeouts")[0][:200]
    for secret in secrets:
        if secret:
            text = text.replace(str(secret), redact_uri(str(secret)) if "://" in str(secret) else "***")
    return redact_uri(text)
