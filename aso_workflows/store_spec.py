"""Where a campaign's store is (:class:`StoreSpec`), and a URI as it may be printed (:func:`redact_uri`).

Small and import-free, so the campaign file (:mod:`aso_workflows.config`) can say where its store is
without importing the store's backends (:mod:`aso_workflows.store` opens it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["StoreSpec", "redact_uri"]


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


def redact_uri(uri: str) -> str:
    """``mongodb://user:secret@host`` → ``mongodb://user:***@host`` (any scheme, anywhere in the text)."""
    return re.sub(r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]+):[^@\s]*@", r"\1:***@", uri)
