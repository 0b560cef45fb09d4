"""Simulating candidates (with a spectra cache) and recording evaluations.

These functions are what the jobflow jobs call; they need only the store and ids, so each can run as its
own process or Slurm job. A spectrum is never computed twice for the same structure and settings: the
``spectra`` collection is a cache keyed by fingerprint + technique + settings hash (+ absorber site).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from pymatgen.core import Structure

from aso_workflows.campaign import progress
from aso_workflows.campaign.state import CampaignState, evaluation_id, now
from aso_workflows.errors import AsoError
from aso_workflows.spectra.base import AbsorberSimulator
from aso_workflows.spectra.spectrum import Spectrum

__all__ = [
    "provenance",
    "simulate_technique",
    "simulate_absorber",
    "combine_absorbers",
    "record_evaluation",
    "absorber_sites",
]


def provenance(t0: float | None = None) -> dict:
    """Where and how a job ran: host, Slurm job id/partition when under Slurm, jobflow job uuid."""
    out = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_partition": os.environ.get("SLURM_JOB_PARTITION"),
        "finished": now(),
    }
    try:
        from jobflow import CURRENT_JOB

        if CURRENT_JOB.job is not None:
            out["job_uuid"] = CURRENT_JOB.job.uuid
    except Exception:  # noqa: BLE001 - outside jobflow there is no current job
        pass
    if t0 is not None:
        out["wall_time_s"] = round(time.perf_counter() - t0, 3)
    return out


def _cache_id(fingerprint: str, technique: str, key: str, site: int | None = None) -> str:
    return f"{fingerprint}:{technique}:{key}" + (f":site{site}" if site is not None else "")


def _cached(state: CampaignState, cid: str) -> Spectrum | None:
    doc = state.db.spectra.find_one({"_id": cid})
    return Spectrum.model_validate(doc["spectrum"]) if doc is not None else None


def _put_cache(
    state: CampaignState, cid: str, fingerprint: str, technique: str, spectrum: Spectrum, prov: dict
):
    doc = {
        "fingerprint": fingerprint,
        "technique": technique,
        "spectrum": spectrum.model_dump(mode="json"),
        "provenance": prov,
    }
    state.db.spectra.update_one({"_id": cid}, {"$setOnInsert": doc}, upsert=True)


def _workdir(state: CampaignState, pid: str, technique: str) -> Path:
    d = state.workdir / "work" / pid.replace(":", "_") / technique
    d.mkdir(parents=True, exist_ok=True)
    return d


def absorber_sites(state: CampaignState, pid: str, technique: str) -> list[int]:
    """Absorber sites the simulator computes for this candidate (XAS only)."""
    sim = state.simulators[technique]
    assert isinstance(sim, AbsorberSimulator)
    s = Structure.from_dict(state.proposal(pid)["structure"])
    return sim.absorber_sites(s)


def simulate_technique(state: CampaignState, pid: str, technique: str) -> dict:
    """Simulate one candidate with one technique (all absorbers in this process for XAS).

    Returns a small dict: ``{"status", "cache_id" | "error", "cached", "provenance"}``. Failures are
    returned, not raised, so the iteration goes on and the campaign proposes a replacement.
    """
    t0 = time.perf_counter()
    prop = state.proposal(pid)
    sim = state.simulators[technique]
    cid = _cache_id(prop["fingerprint"], technique, sim.settings_key())
    if _cached(state, cid) is not None:
        return {"status": "completed", "cache_id": cid, "cached": True, "provenance": provenance(t0)}
    structure = Structure.from_dict(prop["structure"])
    try:
        spectrum = sim.simulate(structure, workdir=_workdir(state, pid, technique))
    except (AsoError, OSError, RuntimeError, ValueError) as exc:
        return {"status": "failed", "error": _one_line(exc), "provenance": provenance(t0)}
    prov = provenance(t0)
    _put_cache(state, cid, prop["fingerprint"], technique, spectrum, prov)
    return {"status": "completed", "cache_id": cid, "cached": False, "provenance": prov}


def simulate_absorber(state: CampaignState, pid: str, technique: str, site: int) -> dict:
    """One absorber run of an XAS technique (the cluster fan-out unit)."""
    t0 = time.perf_counter()
    prop = state.proposal(pid)
    sim = state.simulators[technique]
    assert isinstance(sim, AbsorberSimulator)
    cid = _cache_id(prop["fingerprint"], technique, sim.settings_key(), site)
    if _cached(state, cid) is not None:
        return {
            "status": "completed",
            "cache_id": cid,
            "site": site,
            "cached": True,
            "provenance": provenance(t0),
        }
    structure = Structure.from_dict(prop["structure"])
    try:
        d = sim.write_absorber_inputs(structure, site, _workdir(state, pid, technique) / f"site_{site:04d}")
        spectrum = sim.run_absorber(d)
    except (AsoError, OSError, RuntimeError, ValueError) as exc:
        return {"status": "failed", "site": site, "error": _one_line(exc), "provenance": provenance(t0)}
    prov = provenance(t0)
    _put_cache(state, cid, prop["fingerprint"], technique, spectrum, prov)
    return {"status": "completed", "cache_id": cid, "site": site, "cached": False, "provenance": prov}


def combine_absorbers(state: CampaignState, pid: str, technique: str, results: list[dict]) -> dict:
    """Average the per-absorber spectra of one candidate into its spectrum (cached like the others)."""
    t0 = time.perf_counter()
    prop = state.proposal(pid)
    sim = state.simulators[technique]
    failed = [r for r in results if r.get("status") != "completed"]
    if failed:
        errs = "; ".join(f"site {r.get('site')}: {r.get('error')}" for r in failed)
        return {
            "status": "failed",
            "error": f"{len(failed)} absorber run(s) failed: {errs}",
            "provenance": provenance(t0),
        }
    spectra = [_cached(state, r["cache_id"]) for r in results]
    combined = sim.combine(spectra, [r["site"] for r in results])
    cid = _cache_id(prop["fingerprint"], technique, sim.settings_key())
    prov = provenance(t0)
    prov["absorber_jobs"] = [r["provenance"] for r in results]
    _put_cache(state, cid, prop["fingerprint"], technique, combined, prov)
    return {"status": "completed", "cache_id": cid, "cached": False, "provenance": prov}


def record_evaluation(state: CampaignState, pid: str, results: dict[str, dict]) -> dict:
    """Write the evaluation of one candidate (all techniques) and its mismatch; idempotent.

    Returns ``{"evaluation_id", "status", "objective"}``.
    """
    prop = state.proposal(pid)
    eid = evaluation_id(state.name, prop["fingerprint"], state.settings_key)
    existing = state.db.evaluations.find_one({"_id": eid})
    if existing is not None:
        return {"evaluation_id": eid, "status": existing["status"], "objective": existing.get("objective")}
    failed = {t: r for t, r in results.items() if r.get("status") != "completed"}
    doc = {
        "campaign": state.name,
        "iteration": prop["iteration"],
        "candidate": prop["candidate"],
        "proposal_id": pid,
        "kind": prop.get("kind", "proposal"),
        "fingerprint": prop["fingerprint"],
        "settings_key": state.settings_key,
        "structure": prop["structure"],
        "provenance": {t: r.get("provenance") for t, r in results.items()},
        "created": now(),
    }
    if failed:
        doc.update(
            status="failed",
            error="; ".join(f"{t}: {r.get('error')}" for t, r in failed.items()),
            objective=None,
            mse={},
        )
    else:
        spectra = {t: _cached(state, r["cache_id"]) for t, r in results.items()}
        total, per_mse = state.objective.evaluate(spectra)
        doc.update(
            status="completed",
            objective=float(total),
            mse={t: float(v) for t, v in per_mse.items()},
            spectra={t: r["cache_id"] for t, r in results.items()},
        )
    state.db.evaluations.update_one({"_id": eid}, {"$setOnInsert": doc}, upsert=True)
    state.db.proposals.update_one({"_id": pid}, {"$set": {"status": doc["status"], "evaluation_id": eid}})
    if doc["status"] == "completed":
        best = state.best(1)
        state.update(n_used=state.n_used(), best_objective=best[0]["objective"] if best else None)
    progress.notify(state)
    return {"evaluation_id": eid, "status": doc["status"], "objective": doc["objective"]}


def load_spectrum(state: CampaignState, cache_id: str) -> Spectrum:
    s = _cached(state, cache_id)
    if s is None:
        raise KeyError(cache_id)
    return s


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
