"""The jobflow JobStore for cluster runs: one that Slurm jobs can open themselves.

jobflow's ``JobFiretask`` writes each job's output from inside the job, and the store travels inside the
Firework (serialised), so it must be reachable from compute nodes: MongoDB, or a file-backed maggma
``MontyStore`` (SQLite, safe for several processes) on a disk the nodes share.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from aso_workflows.errors import InputError

__all__ = ["shared_job_store"]


def shared_job_store(target: str | Path, database: str | None = None, collection: str = "outputs"):
    """A jobflow ``JobStore`` on MongoDB (``mongodb://``/``mongodb+srv://`` URI) or on a shared directory.

    Parameters
    ----------
    target
        A MongoDB URI (credentials inside are serialised into every Firework: use a user with rights on
        this database only), or a directory on a disk shared by the controller and the compute nodes.
    database
        Database name (default: the URI's path, else ``jobflow``).
    collection
        Collection of the job outputs.
    """
    from jobflow import JobStore

    text = str(target)
    if text.startswith(("mongodb://", "mongodb+srv://")):
        from maggma.stores import MongoURIStore

        database = database or unquote(urlsplit(text).path.lstrip("/")) or "jobflow"
        return JobStore(MongoURIStore(text, collection, database=database))
    if "://" in text:
        raise InputError(text.split("://")[0] + "://...", "expected a mongodb:// URI or a shared directory")
    from maggma.stores import MontyStore

    directory = Path(text).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return JobStore(
        MontyStore(
            collection, database_path=str(directory), database_name=database or "jobflow", storage="sqlite"
        )
    )
