"""The campaign collections and their indexes, as one :class:`CampaignDB` on any backend.

Collections (see ``docs/results.md``; one pydantic model each in :mod:`aso_workflows.schemas`):

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
``job_errors``
    The traceback of each job that raised.
``leases``
    The controller that drives a campaign now (:mod:`aso_workflows.store.lease`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from aso_workflows.store.blobs import BlobStore
from aso_workflows.store.collection import StoreCollection
from aso_workflows.store.errors import reachable
from aso_workflows.store.lease import Lease, LeaseState, hold_lease, lease_state
from aso_workflows.store.spec import StoreSpec

__all__ = ["COLLECTIONS", "INDEXES", "CampaignDB"]

logger = logging.getLogger(__name__)

COLLECTIONS = ("campaigns", "evaluations", "spectra", "models", "proposals", "job_errors", "leases")

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


class CampaignDB:
    """The campaign collections plus a blob store, on any of the three backends
    (:func:`~aso_workflows.store.backends.open_store` opens one)."""

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
        """Store ``data`` under ``name`` in the blob store; returns its reference."""
        with reachable(self.spec):
            return self.blobs.put(name, data)

    def get_blob(self, ref: str) -> bytes:
        """The bytes of the blob ``ref``."""
        with reachable(self.spec):
            return self.blobs.get(ref)

    # ---- one controller per campaign ---------------------------------------------------------------
    def lease(self, campaign: str, ttl: float = 30.0) -> contextlib.AbstractContextManager[Lease]:
        """Hold the campaign's lease while the block runs: one controller per campaign
        (:func:`aso_workflows.store.lease.hold_lease`; a second controller gets ``LeaseHeld``)."""
        return hold_lease(self, campaign, ttl)

    def controller(self, campaign: str) -> LeaseState:
        """Whether a controller drives ``campaign`` now (its lease: holder, since when, alive or not)."""
        with reachable(self.spec):
            return lease_state(self.leases.find_one({"_id": campaign}))

    def thread_handle(self, name: str) -> tuple[Any, Any]:
        """``(collection, client)``: a handle on collection ``name`` for use by another thread, and the
        client to close after (None: the store's own, shared client is thread-safe)."""
        if self.spec.kind == "embedded":
            from montydb import MontyClient

            client = MontyClient(str(Path(str(self.spec.path)) / "db"))
            return StoreCollection(client[self.spec.database][name], self), client
        return getattr(self, name), None

    def close(self) -> None:
        """Close the client (never the shared in-process mongomock one)."""
        if self._client is not None and self.spec.kind != "mongomock":
            with contextlib.suppress(Exception):
                self._client.close()
