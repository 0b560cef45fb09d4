"""A FireWorks LaunchPad on an in-process ``mongomock`` database, for tests and demos.

Nothing is shared between processes; the offline executor keeps every LaunchPad call in its controller
process, so this is enough to drive real Slurm jobs in tests. Users run against a MongoDB server
(:func:`aso_workflows.cluster.launchpad.load_launchpad`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fireworks import LaunchPad

__all__ = ["mongomock_launchpad"]

_PATCH_LOCK = threading.Lock()


def mongomock_launchpad(name: str = "fireworks", reset: bool = True) -> LaunchPad:
    """A LaunchPad on an in-process ``mongomock`` database (tests only: nothing is shared between processes).

    Offline mode (:class:`~aso_workflows.cluster.offline.SlurmOfflineExecutor`) keeps every LaunchPad call
    in the controller process, so this is enough to drive real Slurm jobs.
    """
    import mongomock
    import mongomock.gridfs
    from fireworks import LaunchPad
    from fireworks.core import launchpad as fw_launchpad

    mongomock.gridfs.enable_gridfs_integration()  # FireWorks opens a GridFS fallback collection
    # LaunchPad.__init__ builds its client from the module-level name `MongoClient`; swapping it for the
    # duration of the constructor keeps every other line of FireWorks' own initialisation.
    with _PATCH_LOCK:
        original = fw_launchpad.MongoClient
        fw_launchpad.MongoClient = mongomock.MongoClient
        try:
            lp = LaunchPad(name=name, strm_lvl="ERROR")
        finally:
            fw_launchpad.MongoClient = original
    if reset:
        lp.reset("", require_password=False)
    return lp
