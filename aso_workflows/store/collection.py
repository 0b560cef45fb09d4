"""One campaign collection on any backend, with the same write and read rules everywhere.

:class:`StoreCollection` keeps what a MongoDB server refuses out of the writes:

- numpy values (``np.float64``, ``np.int64``, ``np.bool_``, arrays) become Python numbers and lists
  (:func:`bson_safe`), so they never reach BSON (pymongo refuses them; mongomock and montydb would store
  them silently);
- a document over :data:`~aso_workflows.store.blobs.INLINE_LIMIT` keeps its largest fields in the blob
  store (:mod:`aso_workflows.store.blobs`); reads through this class return the original values (pymongo
  users see the reference: ``docs/results.md``);
- a write the server refuses (FerretDB 1.x: arrays of arrays, infinities) is one line naming the
  collection, the server's reason and what to do (:class:`~aso_workflows.store.errors.StoreRefused`);
  a lost connection is one :class:`~aso_workflows.store.errors.StoreUnavailable` line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from aso_workflows.store.blobs import BlobStore, offload_large_fields, resolve_blob_fields
from aso_workflows.store.errors import reachable, server_refusal, unavailable
from aso_workflows.store.spec import StoreSpec

__all__ = ["StoreCollection", "StoreOwner", "bson_safe"]


class StoreOwner(Protocol):
    """What a collection needs of the store that owns it (a :class:`~.campaign_db.CampaignDB`): where it
    is and its blob store."""

    spec: StoreSpec
    blobs: BlobStore


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


class StoreCollection:
    """One campaign collection, on any backend, with the write/read rules of the module docstring.

    Every attribute not defined here is the backend collection's own (``count_documents``,
    ``create_index``, ``delete_one`` ...).
    """

    def __init__(self, collection: Any, owner: StoreOwner) -> None:
        self._coll = collection
        self._owner = owner
        self.name = collection.name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._coll, attr)
        if not callable(value):
            return value
        spec = self._owner.spec

        def call(*args: Any, **kwargs: Any) -> Any:
            with reachable(spec):
                return value(*args, **kwargs)

        return call

    def __repr__(self) -> str:
        return f"StoreCollection({self.name!r}, {self._owner.spec.redacted()})"

    # ---- writes ---------------------------------------------------------------------------------
    def _prepare(self, doc: dict[str, Any]) -> Any:
        """A BSON-safe copy of a document (or of an update's ``$set`` part) under the inline limit."""
        doc = bson_safe(doc)
        if not isinstance(doc, dict):
            return doc
        return offload_large_fields(doc, self.name, self._owner.blobs)

    def _prepare_update(self, update: dict[str, Any] | list[Any]) -> Any:
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
            raise unavailable(exc, self._owner.spec) from None
        except Exception as exc:
            where = f"{self._owner.spec.redacted()}: the server refused a write to '{self.name}'"
            raise (server_refusal(exc, where) or exc) from None

    def insert_one(self, document: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return self._write("insert_one", self._prepare(document), *args, **kwargs)

    def insert_many(self, documents: Iterable[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        return self._write("insert_many", [self._prepare(d) for d in documents], *args, **kwargs)

    def replace_one(
        self, filter: dict[str, Any], replacement: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:  # noqa: A002
        return self._write("replace_one", bson_safe(filter), self._prepare(replacement), *args, **kwargs)

    def update_one(
        self, filter: dict[str, Any], update: dict[str, Any] | list[Any], *args: Any, **kwargs: Any
    ) -> Any:  # noqa: A002
        return self._write("update_one", bson_safe(filter), self._prepare_update(update), *args, **kwargs)

    def update_many(
        self, filter: dict[str, Any], update: dict[str, Any] | list[Any], *args: Any, **kwargs: Any
    ) -> Any:  # noqa: A002
        return self._write("update_many", bson_safe(filter), self._prepare_update(update), *args, **kwargs)

    # ---- reads ----------------------------------------------------------------------------------
    def _resolve(self, doc: Any) -> Any:
        return resolve_blob_fields(doc, self._owner.blobs)

    def find_one(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        with reachable(self._owner.spec):
            return self._resolve(self._coll.find_one(*args, **kwargs))

    def find(self, *args: Any, **kwargs: Any) -> _Cursor:
        with reachable(self._owner.spec):
            return _Cursor(self._coll.find(*args, **kwargs), self._resolve, self._owner.spec)


class _Cursor:
    """A backend cursor whose documents are resolved (:meth:`StoreCollection._resolve`) as they come."""

    def __init__(self, cursor: Any, resolve: Callable[[Any], Any], spec: StoreSpec) -> None:
        self._cursor = cursor
        self._resolve = resolve
        self._spec = spec

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with reachable(self._spec):
            for d in self._cursor:
                yield self._resolve(d)

    def __next__(self) -> dict[str, Any]:
        with reachable(self._spec):
            return self._resolve(next(self._cursor))

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._cursor, attr)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            with reachable(self._spec):
                out = value(*args, **kwargs)
            return _Cursor(out, self._resolve, self._spec) if out is self._cursor else out

        return call
