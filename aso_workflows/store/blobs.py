"""Large binary objects beside the documents: files for the embedded store, GridFS for MongoDB.

Surrogate weights are stored here by name, and so are some fields of documents: the fields of
:data:`BLOB_FIELDS` always, and the largest fields of a document that would exceed :data:`INLINE_LIMIT`
(a structure of a large supercell, a long spectrum). Such a field is kept as
``{"aso_blob": "gridfs:docs/<collection>/<sha1>", "bytes": N}`` (content-addressed, so a rerun writes
nothing new) and :func:`resolve_blob_fields` puts the original value back on reading. No document then
approaches MongoDB's 16 MB limit.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

__all__ = [
    "BLOB_FIELDS",
    "INLINE_LIMIT",
    "BlobStore",
    "FileBlobStore",
    "GridFSBlobStore",
    "offload_large_fields",
    "to_blob",
    "resolve_blob_fields",
]

INLINE_LIMIT = 8 * 2**20
"""Encoded size (bytes) above which a document's largest fields go to the blob store (MongoDB: 16 MiB)."""
BLOB_KEY = "aso_blob"
"""The key of a field's reference to its value in the blob store."""
BLOB_FIELDS: dict[str, frozenset[str]] = {"spectra": frozenset({"feff_paths"})}
"""Top-level fields always kept in the blob store, whatever the document's size (bulky data that queries
never look into: the FEFF scattering paths of an EXAFS spectrum)."""
_SMALLEST_OFFLOADED = 4096
"""A field encoded in fewer bytes than this stays in its document."""


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
    """Blobs as files under one directory (the embedded store's ``blobs/``); references ``file:<name>``."""

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
    """Blobs in the database's GridFS bucket ``blobs`` (MongoDB, mongomock); references ``gridfs:<name>``."""

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


def bson_size(doc: dict[str, Any]) -> int:
    """The encoded size of ``doc`` in bytes."""
    import bson

    return len(bson.encode(doc))


def to_blob(value: Any, collection: str, blobs: BlobStore) -> dict[str, Any]:
    """``value`` written to ``blobs`` (content-addressed: a rerun writes nothing new); the reference
    that replaces it in its document of ``collection``."""
    import bson

    data = bson.encode({"v": value})
    name = f"docs/{collection}/{hashlib.sha1(data).hexdigest()}"
    ref = blobs.ref(name)
    if not blobs.exists(ref):
        ref = blobs.put(name, data)
    return {BLOB_KEY: ref, "bytes": len(data)}


def offload_large_fields(doc: dict[str, Any], collection: str, blobs: BlobStore) -> dict[str, Any]:
    """``doc`` itself when it encodes within :data:`INLINE_LIMIT` and has none of the
    :data:`BLOB_FIELDS` of ``collection``; else a copy whose :data:`BLOB_FIELDS` and largest fields
    (largest first, until it fits; ``_id`` always stays) are references to their values in ``blobs``."""
    always = [k for k in BLOB_FIELDS.get(collection, ()) if doc.get(k) is not None]
    if not always and bson_size(doc) <= INLINE_LIMIT:
        return doc
    doc = dict(doc)
    for key in always:
        doc[key] = to_blob(doc[key], collection, blobs)
    sizes = {k: bson_size({"v": v}) for k, v in doc.items() if k != "_id"}
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if bson_size(doc) <= INLINE_LIMIT or sizes[key] < _SMALLEST_OFFLOADED:
            break
        doc[key] = to_blob(doc[key], collection, blobs)
    return doc


def resolve_blob_fields(doc: Any, blobs: BlobStore) -> Any:
    """``doc`` with the fields :func:`offload_large_fields` replaced by references read back (anything
    that is not a document, or has no such field, is returned as it is)."""
    if not isinstance(doc, dict):
        return doc
    refs = [k for k, v in doc.items() if isinstance(v, dict) and BLOB_KEY in v and len(v) <= 2]
    if not refs:
        return doc
    import bson

    doc = dict(doc)
    for key in refs:
        doc[key] = bson.decode(blobs.get(doc[key][BLOB_KEY]))["v"]
    return doc
