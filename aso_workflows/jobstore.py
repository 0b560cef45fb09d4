"""The jobflow JobStore for job outputs: one that every job can open itself, in any process.

Used by both executors: the local one (``aso run``) and the cluster one (``aso submit``).

jobflow's ``JobFiretask`` writes each job's output from inside the job, and the store travels inside the
Firework (serialised), so it must be reachable from compute nodes: MongoDB, or a file-backed maggma
``MontyStore`` (SQLite, safe for several processes) on a disk the nodes share.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from aso_workflows.errors import InputError

if TYPE_CHECKING:
    from jobflow import JobStore
    from maggma.stores import MongoStore, MontyStore

__all__ = ["shared_job_store", "SharedMontyStore", "PasswordFileMongoURIStore"]


def _monty_store_class() -> type[MontyStore]:
    from maggma.stores import MontyStore

    return MontyStore


if TYPE_CHECKING:  # mypy cannot follow a base class made by a call
    _MontyStoreBase = MontyStore
else:
    _MontyStoreBase = _monty_store_class()


class SharedMontyStore(_MontyStoreBase):
    """maggma's ``MontyStore`` that writes montydb's storage config only when it does not exist yet.

    ``MontyStore.connect`` rewrites the config file on every connect; with many Slurm jobs connecting at
    once, one job can read the file while another rewrites it, and montydb then refuses to open
    ("cannot be changed in current session"). Seen here under load; writing it once removes the race.
    """

    def connect(self, force_reset: bool = False) -> None:
        if not self._coll or force_reset:
            from montydb import MontyClient, set_storage

            if (
                self.database_path != ":memory:"
                and not (Path(self.database_path) / "monty.storage.cfg").is_file()
            ):
                set_storage(self.database_path, storage=self.storage, **self.storage_kwargs)
            client = MontyClient(self.database_path, **self.client_kwargs)
            self._coll = client[self.database_name][self.collection_name]
            # montydb creates the SQLite file before its table; create the table now, so a job reading
            # while another writes the first output never sees a file without a table ("no such table")
            if self.database_path != ":memory:":
                _ensure_table(self._coll)


def _ensure_table(coll: Any, tries: int = 20) -> None:
    """Create the collection's SQLite table if it is missing, tolerating jobs that do the same at once.

    A job that opens the file in the instant between another job creating it and creating its table gets
    ``sqlite3.OperationalError: no such table`` (seen in CI with two Slurm jobs starting together on a
    fresh store): wait a moment and look again.
    """
    import sqlite3
    import time

    from montydb.errors import DuplicateKeyError

    for attempt in range(tries):
        try:
            if coll.count_documents({}) == 0:
                try:
                    coll.insert_one({"_id": "__aso_init__"})
                except DuplicateKeyError:
                    pass  # another job is doing the same at this moment: the table exists
                coll.delete_one({"_id": "__aso_init__"})
            return
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _mongo_store_class() -> type[MongoStore]:
    from maggma.stores import MongoStore

    return MongoStore


if TYPE_CHECKING:
    _MongoStoreBase = MongoStore
else:
    _MongoStoreBase = _mongo_store_class()


class PasswordFileMongoURIStore(_MongoStoreBase):
    """maggma's ``MongoStore`` on a URI that reads the MongoDB password from a file each time it connects.

    jobflow serialises the JobStore into every Firework (LaunchPad documents, ``FW.json`` in each launch
    directory, dynamic additions): with the password inside the URI, each of those copies holds it. This
    store serialises the URI without the password plus the file's path, and hands the password to
    ``pymongo.MongoClient`` only in the process that connects, without storing it on the object.
    """

    def __init__(
        self,
        uri: str,
        collection_name: str,
        database: str | None = None,
        password_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.password_file = password_file
        super().__init__(database=database, collection_name=collection_name, uri=uri, **kwargs)

    def connect(self, force_reset: bool = False) -> None:
        if self._coll is None or force_reset:
            from pymongo import MongoClient

            from aso_workflows.store import read_password_file

            kwargs = dict(self.mongoclient_kwargs)
            if self.password_file:
                kwargs["password"] = read_password_file(self.password_file, "job_store password_file")
            coll = MongoClient(self.uri, **kwargs)[self.database][self.collection_name]
            self._coll = coll  # type: ignore[assignment]  # maggma declares _coll as None (and ignores it too)


def shared_job_store(
    target: str | Path,
    database: str | None = None,
    collection: str = "outputs",
    password_file: str | Path | None = None,
) -> JobStore:
    """A jobflow ``JobStore`` on MongoDB (``mongodb://``/``mongodb+srv://`` URI) or on a shared directory.

    Parameters
    ----------
    target
        A MongoDB URI, or a directory on a disk shared by the controller and the compute nodes. A
        password inside the URI is serialised into every Firework: give ``password_file`` instead.
    database
        Database name (default: the URI's path, else ``jobflow``).
    collection
        Collection of the job outputs.
    password_file
        File holding the MongoDB password of the URI's user (``mongodb://user@host/db``), read by each
        job when it connects (on a disk the jobs see; mode 600). Only its path travels in the Fireworks.
    """
    from jobflow import JobStore

    text = str(target)
    if text.startswith(("mongodb://", "mongodb+srv://")):
        from maggma.stores import MongoStore

        database = database or unquote(urlsplit(text).path.lstrip("/")) or "jobflow"
        if password_file is not None:
            path = str(Path(password_file).expanduser().resolve())
            return JobStore(
                PasswordFileMongoURIStore(text, collection, database=database, password_file=path)
            )
        return JobStore(MongoStore.from_uri(text, collection, database=database))
    if password_file is not None:
        raise InputError("--job-store-password-file", "only applies to a mongodb:// JobStore URI")
    if "://" in text:
        raise InputError(text.split("://")[0] + "://...", "expected a mongodb:// URI or a shared directory")
    directory = Path(text).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return JobStore(
        SharedMontyStore(
            collection, database_path=str(directory), database_name=database or "jobflow", storage="sqlite"
        )
    )
