"""What the store's server can do wrong, as one line each: refused writes, lost connections."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aso_workflows.errors import AsoError
from aso_workflows.store.spec import StoreSpec, redact_uri

__all__ = ["StoreRefused", "StoreUnavailable", "reachable", "server_refusal", "unavailable"]


class StoreRefused(AsoError):
    """The database server refused a write (one line: collection, the server's reason, what to do)."""


class StoreUnavailable(AsoError, Exception):
    """The store's server stopped answering during a campaign (one line; nothing stored is lost)."""


def unavailable(exc: Exception, spec: StoreSpec) -> StoreUnavailable:
    """A lost connection to the server of ``spec`` as one :class:`StoreUnavailable` line."""
    first = " ".join(str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0].split())[:160]
    return StoreUnavailable(
        f"{spec.redacted()} not reachable ({redact_uri(first)}); the campaign is intact in the store: "
        "run the same command again (or aso resume CAMPAIGN) once the server answers"
    )


@contextlib.contextmanager
def reachable(spec: StoreSpec) -> Iterator[None]:
    """Turn a lost connection to the store's server into one :class:`StoreUnavailable` line."""
    from pymongo.errors import ConnectionFailure

    try:
        yield
    except ConnectionFailure as exc:
        raise unavailable(exc, spec) from None


# Server codes of a document refused for what it holds: BadValue (FerretDB's nested arrays, infinities),
# BSONObjectTooLarge, document too large to insert.
_REFUSAL_CODES = {2, 10334, 17419, 17420}


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
