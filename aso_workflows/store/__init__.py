"""Campaign state in a MongoDB-compatible document store.

One schema, three backends (:mod:`~aso_workflows.store.backends`: montydb/SQLite embedded in the
campaign directory, a MongoDB server, in-process mongomock for tests), opened by :func:`open_store` from
a :class:`StoreSpec` (:mod:`~aso_workflows.store.spec`). One module per concept:

- :mod:`~aso_workflows.store.campaign_db`: the campaign collections and their indexes (:class:`CampaignDB`);
- :mod:`~aso_workflows.store.collection`: the write/read rules every collection follows on every backend
  (numpy values cleaned, large documents split, refusals and lost connections as one line);
- :mod:`~aso_workflows.store.blobs`: surrogate weights and the large fields of documents, in files or GridFS;
- :mod:`~aso_workflows.store.lease`: one controller per campaign (:class:`LeaseHeld` for a second one);
- :mod:`~aso_workflows.store.errors`: :class:`StoreRefused`, :class:`StoreUnavailable`.

The documents themselves are the pydantic models of :mod:`aso_workflows.schemas`.
"""

from aso_workflows.store.backends import open_store
from aso_workflows.store.blobs import BLOB_FIELDS, INLINE_LIMIT, BlobStore, FileBlobStore, GridFSBlobStore
from aso_workflows.store.campaign_db import COLLECTIONS, INDEXES, CampaignDB
from aso_workflows.store.collection import StoreCollection, bson_safe
from aso_workflows.store.errors import StoreRefused, StoreUnavailable, server_refusal
from aso_workflows.store.lease import Lease, LeaseHeld, LeaseState, lease_state
from aso_workflows.store.spec import StoreSpec, read_password_file, redact_uri, unknown_uri_options

__all__ = [
    "BLOB_FIELDS",
    "COLLECTIONS",
    "INDEXES",
    "INLINE_LIMIT",
    "BlobStore",
    "CampaignDB",
    "FileBlobStore",
    "GridFSBlobStore",
    "Lease",
    "LeaseHeld",
    "LeaseState",
    "StoreCollection",
    "StoreRefused",
    "StoreSpec",
    "StoreUnavailable",
    "bson_safe",
    "lease_state",
    "open_store",
    "read_password_file",
    "redact_uri",
    "server_refusal",
    "unknown_uri_options",
]
