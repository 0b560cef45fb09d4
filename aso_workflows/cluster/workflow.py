"""A jobflow flow as a FireWorks workflow, named and tagged for the web GUI, with a JobStore jobs can reach."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aso_workflows.errors import InputError

if TYPE_CHECKING:
    from fireworks import Workflow
    from jobflow import Flow, Job, JobStore

__all__ = ["to_workflow", "check_job_store"]

_IN_MEMORY_STORES = {"MemoryStore", "MongomockStore"}
"""maggma stores that live in one process: Slurm jobs could not write their outputs there."""


def to_workflow(flow: Flow | Job, job_store: JobStore | None = None, name: str | None = None) -> Workflow:
    """A jobflow ``Flow``/``Job`` as a FireWorks ``Workflow`` (``flow_to_workflow``), tagged for the web GUI.

    A campaign's workflow gets ``metadata.campaign`` (from its jobs' ``_aso`` spec), so the web GUI's
    ``/wf/metadata/campaign/<name>/`` and ``lpad get_wflows -q '{"metadata.campaign": ...}'`` find it.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    named: dict[str, Any] = {"name": name} if name else {}
    # jobflow's hint says JobStore, but its default None means jobflow's configured store
    wf = flow_to_workflow(flow, store=job_store, **named)  # type: ignore[arg-type]
    campaigns = {(fw.spec.get("_aso") or {}).get("campaign") for fw in wf.fws} - {None}
    if len(campaigns) == 1:
        wf.metadata.setdefault("campaign", campaigns.pop())
    return wf


def check_job_store(store: JobStore) -> None:
    """Refuse JobStores that Slurm jobs cannot open (in-memory ones)."""
    stores = [getattr(store, "docs_store", None), *getattr(store, "additional_stores", {}).values()]
    for s in stores:
        if s is not None and type(s).__name__ in _IN_MEMORY_STORES:
            raise InputError(
                "job_store",
                f"{type(s).__name__} lives in this process only; Slurm jobs write outputs themselves, so use "
                "MongoDB or MontyStore(..., storage='sqlite') on a shared disk",
            )
