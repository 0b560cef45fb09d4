"""How to reach a campaign store: :class:`StoreSpec` and its URI and password helpers.

Small and free of database imports (pymongo is imported only by :func:`unknown_uri_options`), so the
campaign file's validation can use it without loading a backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aso_workflows.errors import InputError

__all__ = ["StoreSpec", "read_password_file", "redact_uri", "unknown_uri_options"]


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "uri": self.uri,
            "database": self.database,
            "timeout_ms": self.timeout_ms,
            "password_file": self.password_file,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreSpec:
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
