"""One controller per campaign: the lease document in ``leases``.

The lease is a document ``leases/<campaign>`` (:class:`~aso_workflows.schemas.LeaseDoc`) with its holder
(host:pid:random) and an expiry ``ttl`` seconds ahead, renewed every ``ttl / 3`` seconds by a daemon
thread while the controller lives and deleted at the end. A lease held by a live controller is refused
with :class:`LeaseHeld` (one line: who, since when, until when); one whose expiry passed (its controller
stopped renewing: killed, host lost, store unreachable for long) or whose holder's process is gone from
this host is taken over (``Lease.took_over``). Taking a lease is a single keyed insert or a
compare-and-set on the expired document, so two controllers starting together cannot both get it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aso_workflows.errors import AsoError

if TYPE_CHECKING:
    from aso_workflows.store.collection import StoreCollection

__all__ = ["Lease", "LeaseHeld", "LeaseState", "LeaseStore", "hold_lease", "lease_state"]

logger = logging.getLogger(__name__)


class LeaseStore(Protocol):
    """What a lease needs of the store (a :class:`~.campaign_db.CampaignDB`): its ``leases`` collection
    and a handle on it for the renewing thread."""

    @property
    def leases(self) -> StoreCollection: ...

    def thread_handle(self, name: str) -> tuple[Any, Any]: ...


class LeaseHeld(AsoError):
    """Another controller holds the campaign's lease (one line: who, since when, until when)."""


@dataclass
class Lease:
    """This process's hold on a campaign (see :func:`hold_lease`)."""

    campaign: str
    holder: str
    ttl: float
    acquired: float
    took_over: str | None = None  # the previous holder, when its lease had expired or it had died
    lost: bool = False


def _holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_alive(holder: str) -> bool | None:
    """Whether the process of ``holder`` lives (True/False on this host; None: another host, unknown)."""
    host, _, rest = holder.partition(":")
    pid = rest.split(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@dataclass
class LeaseState:
    """Who drives a campaign now, as its lease says (see :meth:`CampaignDB.controller`).

    ``live`` is True while a controller holds an unexpired lease and its process is not known to be
    gone (on another host that cannot be checked: the lease's expiry decides); ``alive`` is the
    process check itself (None: another host). Times are seconds since the epoch; all but ``live`` and
    ``reason`` are None when no lease document exists.
    """

    live: bool
    reason: str
    holder: str | None = None
    host: str | None = None
    pid: int | None = None
    acquired: float | None = None
    renewed: float | None = None
    expires: float | None = None
    alive: bool | None = None


def lease_state(doc: dict | None, now: float | None = None) -> LeaseState:
    """Read a ``leases`` document (or its absence) as a :class:`LeaseState`, with a one-line reason."""
    now = time.time() if now is None else now
    if not doc:
        return LeaseState(False, "no controller holds the campaign's lease (none was started, or it ended)")
    holder = str(doc.get("holder", ""))
    host, _, rest = holder.partition(":")
    pid = rest.split(":")[0]
    alive = _holder_alive(holder)
    expires = float(doc.get("expires", 0.0))
    who = f"pid {pid} on {host}" if pid.isdigit() else holder
    if alive is False:
        live, reason = False, f"its controller ({who}) is gone: killed or crashed without releasing the lease"
    elif expires <= now:
        live = False
        reason = f"its controller ({who}) stopped renewing the lease at {_when(float(doc.get('renewed', expires)))}"
        reason += ": killed, its host lost, or the store unreachable from it"
    else:
        live, reason = True, f"driven by the controller {who} since {_when(float(doc.get('acquired', now)))}"
    return LeaseState(
        live=live,
        reason=reason,
        holder=holder,
        host=host or None,
        pid=int(pid) if pid.isdigit() else None,
        acquired=doc.get("acquired"),
        renewed=doc.get("renewed"),
        expires=expires,
        alive=alive,
    )


def _duplicate_key_errors() -> tuple[type[Exception], ...]:
    """Each backend's DuplicateKeyError (pymongo, montydb, mongomock)."""
    from pymongo.errors import DuplicateKeyError as PyDup

    duplicate: tuple[type[Exception], ...] = (PyDup,)
    try:
        from montydb.errors import DuplicateKeyError as MontyDup

        duplicate += (MontyDup,)
    except ImportError:  # pragma: no cover - montydb is a dependency
        pass
    try:
        from mongomock import DuplicateKeyError as MockDup

        duplicate += (MockDup,)
    except ImportError:  # pragma: no cover
        pass
    return duplicate


def _take(coll: StoreCollection, lease: Lease) -> None:
    """Take ``lease`` in ``coll``: insert it, or take over an expired or dead holder's (compare-and-set).

    Raises
    ------
    LeaseHeld
        A live controller holds it, or another one took it over at the same moment.
    """
    from aso_workflows.schemas import LeaseDoc  # pydantic: not loaded by `aso --help`

    campaign, now = lease.campaign, lease.acquired
    doc = LeaseDoc(_id=campaign, holder=lease.holder, expires=now + lease.ttl, acquired=now, renewed=now)
    try:
        coll.insert_one(doc.to_mongo())
        return
    except _duplicate_key_errors():
        pass
    old = coll.find_one({"_id": campaign}) or {}
    alive = _holder_alive(str(old.get("holder", "")))
    if old and old.get("expires", 0) > now and alive is not False:
        raise LeaseHeld(
            f"campaign {campaign!r} is already driven by another controller ({old['holder']}, "
            f"since {_when(old.get('acquired', now))}, lease renewed {_when(old.get('renewed', now))}); "
            f"stop that one first, or wait {old['expires'] - now:.0f} s if it died on another host"
        )
    # expired or dead: take it over, unless someone else was faster (compare-and-set)
    match = {"_id": campaign, "holder": old.get("holder"), "expires": old.get("expires")}
    if coll.update_one(match, {"$set": doc.to_mongo_fields()}).modified_count != 1:
        raise LeaseHeld(
            f"campaign {campaign!r}: another controller took its lease at the same moment; "
            "only one may drive it"
        )
    lease.took_over = str(old.get("holder"))
    logger.warning(
        "campaign %s: took over the lease of %s (%s)",
        campaign,
        lease.took_over,
        "its process is gone" if alive is False else "expired",
    )


def _renew_until(stop: threading.Event, coll: Any, lease: Lease) -> None:
    """Renew ``lease`` in ``coll`` every ``ttl / 3`` seconds until ``stop`` is set; mark it lost (and
    log it, once) when another controller has taken it."""
    from aso_workflows.schemas import LeaseDoc

    while not stop.wait(lease.ttl / 3):
        t = time.time()
        try:
            res = coll.update_one(
                {"_id": lease.campaign, "holder": lease.holder},
                {"$set": LeaseDoc.set_fields(expires=t + lease.ttl, renewed=t)},
            )
        except Exception as exc:  # noqa: BLE001 - store unreachable: try again next time
            logger.warning(
                "campaign %s: lease not renewed (%s)", lease.campaign, str(exc).split("\n")[0][:120]
            )
            continue
        if res.matched_count == 0 and not lease.lost:
            lease.lost = True
            logger.error("campaign %s: lease lost to another controller", lease.campaign)


@contextlib.contextmanager
def hold_lease(db: LeaseStore, campaign: str, ttl: float = 30.0) -> Iterator[Lease]:
    """Hold the lease of ``campaign`` in ``db`` while the block runs (the module docstring's rules).

    Raises
    ------
    LeaseHeld
        Another live controller drives the campaign.
    """
    lease = Lease(campaign=campaign, holder=_holder_id(), ttl=ttl, acquired=time.time())
    # the renewing thread's own handle: montydb's SQLite engine keeps one connection attribute per
    # client, so two threads sharing a client race on it ("SQLite objects created in a thread can
    # only be used in that same thread", seen in CI); pymongo's client is thread-safe
    renew_coll, renew_client = db.thread_handle("leases")
    try:
        _take(db.leases, lease)
    except BaseException:
        if renew_client is not None:
            renew_client.close()
        raise
    stop = threading.Event()
    thread = threading.Thread(
        target=_renew_until, args=(stop, renew_coll, lease), name=f"aso-lease-{campaign}", daemon=True
    )
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join(timeout=5)
        if renew_client is not None and not thread.is_alive():
            renew_client.close()
        with contextlib.suppress(Exception):
            db.leases.delete_one({"_id": campaign, "holder": lease.holder})
