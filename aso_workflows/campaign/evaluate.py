"""Simulating candidates (with a spectra cache) and recording evaluations.

These functions are what the jobflow jobs call; they need only the store and ids, so each can run as its
own process or Slurm job. A spectrum is never computed twice for the same structure and settings: the
``spectra`` collection is a cache keyed by fingerprint + technique + settings hash (+ absorber site).

A failed *simulation* is returned, never raised, so one bad candidate never stops an iteration: the
simulator's own errors (:class:`~aso_workflows.errors.AsoError`: the code crashed, refused the structure,
ran past its wall time) give a :class:`~aso_workflows.schemas.SimulationResult` with a one-line ``error``
and a ``failure_kind`` (:data:`~aso_workflows.schemas.FAILURE_KINDS`), and the campaign proposes a
replacement (see ``docs/reliability.md``). Anything else is a bug or a broken environment, not a failed
simulation: it is raised, the job fails, its traceback is kept (:func:`record_job_error`) and the
candidate is recorded as ``job_error``. Before any code runs, a structure is checked for a physical
geometry (:func:`geometry_problem`); the campaign's ``simulation_timeout_s`` limits every simulator call.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pymatgen.core import Structure

from aso_workflows import progress
from aso_workflows.campaign.state import CampaignState, evaluation_id
from aso_workflows.errors import AsoError, InputError, SimulationError
from aso_workflows.schemas import (
    FAILURE_KINDS,
    EvaluationDoc,
    FailureKind,
    JobErrorDoc,
    ProposalDoc,
    Provenance,
    RecordResult,
    SimulationResult,
    SpectrumData,
    SpectrumDoc,
    now,
)
from aso_workflows.spectra.base import AbsorberSimulator, Simulator
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.store import CampaignDB

logger = logging.getLogger(__name__)

__all__ = [
    "provenance",
    "simulate_technique",
    "simulate_absorber",
    "combine_absorbers",
    "record_evaluation",
    "absorber_sites",
    "geometry_problem",
    "failure_kind",
    "FAILURE_KINDS",
    "NONPHYSICAL_FRACTION",
    "record_lost",
    "record_job_error",
    "refresh_counters",
]

NONPHYSICAL_FRACTION = 0.5
"""A pair closer than this fraction of the campaign's minimum distance for that pair is non-physical.

Proposals are generated inside the minimum distances (``min_distances``), so a structure that reaches
half of them did not come from the optimiser's constraints: it is a corrupt or hand-made structure that
FEFF or the PDF engine would fail on (or worse, silently give nonsense for)."""


def _current_job_uuid() -> str | None:
    """The uuid of the jobflow job running in this process, if any."""
    from jobflow import CURRENT_JOB

    return CURRENT_JOB.job.uuid if CURRENT_JOB.job is not None else None


def provenance(t0: float | None = None) -> Provenance:
    """Where and how a job ran: host, Slurm job id/partition when under Slurm, jobflow job uuid."""
    return Provenance(
        host=socket.gethostname(),
        pid=os.getpid(),
        slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        slurm_partition=os.environ.get("SLURM_JOB_PARTITION"),
        finished=now(),
        job_uuid=_current_job_uuid(),
        wall_time_s=round(time.perf_counter() - t0, 3) if t0 is not None else None,
    )


def _cache_id(fingerprint: str, technique: str, key: str, site: int | None = None) -> str:
    return f"{fingerprint}:{technique}:{key}" + (f":site{site}" if site is not None else "")


def _cached(state: CampaignState, cid: str) -> bool:
    return state.has_spectrum(cid)


def _put_cache(
    state: CampaignState, cid: str, fingerprint: str, technique: str, spectrum: Spectrum, prov: Provenance
) -> None:
    data = spectrum.model_dump(mode="json")
    paths = data["extra"].pop("feff_paths", None)  # bulky: a field of its own, in the blob store
    doc = SpectrumDoc(
        _id=cid,
        fingerprint=fingerprint,
        technique=technique,
        spectrum=SpectrumData.model_validate(data),
        provenance=prov,
        feff_paths=paths,
    )
    state.db.spectra.update_one({"_id": cid}, {"$setOnInsert": doc.to_mongo_fields()}, upsert=True)


def _workdir(state: CampaignState, pid: str, technique: str) -> Path:
    d = state.workdir / "work" / pid.replace(":", "_") / technique
    d.mkdir(parents=True, exist_ok=True)
    return d


def absorber_sites(state: CampaignState, pid: str, technique: str) -> list[int]:
    """Absorber sites the simulator computes for this candidate (XAS only).

    A structure whose sites cannot be chosen (e.g. no absorbing atom) gives ``[]``: the candidate is
    then recorded as failed by its averaging job instead of breaking the iteration's flow.
    """
    sim = state.simulators[technique]
    assert isinstance(sim, AbsorberSimulator)
    s = Structure.from_dict(state.proposal(pid)["structure"])
    try:
        return sim.absorber_sites(s)
    except InputError:
        return []


def geometry_problem(structure: Structure, dmin_matrix: np.ndarray | None = None) -> str | None:
    """Why ``structure`` is not a physical geometry, or ``None`` if it is.

    Checks finite lattice and coordinates, a cell volume above 1 Å³ per atom, and that no pair of atoms
    (periodic images included) is closer than :data:`NONPHYSICAL_FRACTION` × its minimum distance
    (``dmin_matrix``, the campaign's per-pair table; at least 0.5 Å when none is given).
    """
    lat = np.asarray(structure.lattice.matrix, dtype=float)
    frac = np.asarray(structure.frac_coords, dtype=float)
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(frac))):
        return "lattice or coordinates are NaN or infinite"
    vol = float(abs(np.linalg.det(lat)))
    if not math.isfinite(vol) or vol < 1.0 * len(structure):
        return f"cell volume {vol:.3g} Å³ for {len(structure)} atoms (collapsed cell)"
    n = len(structure)
    limit = (
        NONPHYSICAL_FRACTION * dmin_matrix
        if dmin_matrix is not None and dmin_matrix.shape == (n, n)
        else np.full((n, n), 0.5)
    )
    dm = np.array(structure.distance_matrix, dtype=float)
    np.fill_diagonal(dm, np.inf)
    bad = np.argwhere(np.triu(dm < limit, 1))
    if len(bad):
        i, j = (int(x) for x in bad[0])
        return (
            f"atoms {i} ({structure[i].specie}) and {j} ({structure[j].specie}) are {dm[i, j]:.3f} Å apart "
            f"(limit {limit[i, j]:.2f} Å)" + (f", and {len(bad) - 1} more pairs" if len(bad) > 1 else "")
        )
    return None


def failure_kind(exc: BaseException) -> FailureKind:
    """The :data:`~aso_workflows.schemas.FAILURE_KINDS` entry for an error raised by a simulator."""
    text = str(exc)
    if isinstance(exc, _WallTime) or "timed out after" in text:  # feff_engine kills a run at its limit
        return "walltime"
    if isinstance(exc, InputError):
        return "input_error"
    return "simulator_error"


def _failed(error: str, kind: FailureKind, t0: float, **extra: Any) -> SimulationResult:
    return SimulationResult(
        status="failed", error=error, failure_kind=kind, provenance=provenance(t0), **extra
    )


def _simulator(state: CampaignState, technique: str) -> Simulator:
    """The technique's simulator with the campaign's wall-time limit applied to the code it runs.

    FEFF simulators run the code in a child process and kill its whole process group at ``timeout``
    (per absorber run); the stricter of the simulator's own ``timeout`` and ``simulation_timeout_s``
    applies. ``timeout`` is not part of the settings key, so cached spectra stay valid.
    """
    sim = state.simulators[technique]
    limit = getattr(state.config, "simulation_timeout_s", None)
    if limit is not None and hasattr(sim, "timeout"):
        sim.timeout = float(limit) if sim.timeout is None else min(float(sim.timeout), float(limit))
    return sim


def _check_geometry(state: CampaignState, structure: Structure) -> str | None:
    problem = geometry_problem(structure, state.dmin_matrix if len(structure) == len(state.start) else None)
    return f"non-physical geometry: {problem}; not simulated" if problem else None


def _site_rows(state: CampaignState, technique: str) -> bool:
    """Whether this technique's evaluations also carry per-site rows for the surrogate (a node-level PDF
    surrogate of an optimiser that trains one; see :func:`aso_workflows.surrogate.factory.needs_site_rows`)."""
    from aso_workflows.optimizers.registry import optimizer_class
    from aso_workflows.surrogate.factory import needs_site_rows

    cfg = state.config
    return needs_site_rows(technique, cfg.surrogate) and optimizer_class(cfg.optimizer).needs_surrogate


class _Simulate(Protocol):
    """``Simulator.simulate``'s signature."""

    def __call__(self, structure: Structure, workdir: str | Path | None = None) -> Spectrum: ...


def _with_site_rows(sim: Simulator) -> _Simulate:
    """``simulate(structure, workdir)`` that adds the per-site rows of the technique's entry
    (``surrogate.site_rows``; PDF: the per-atom partials, counting their engine calls)."""
    from aso_workflows.spectra.techniques import get_technique, load_ref

    site_rows = get_technique(sim.technique).surrogate.site_rows
    assert site_rows is not None  # asked for only when the entry names one (_site_rows)
    add_rows = load_ref(site_rows)

    def simulate(structure: Structure, workdir: str | Path | None = None) -> Spectrum:
        spectrum: Spectrum = add_rows(sim, structure, workdir=workdir)
        return spectrum

    return simulate


def _call_with_limit(
    sim: Simulator,
    structure: Structure,
    workdir: Path,
    limit: float | None,
    simulate: _Simulate | None = None,
) -> Spectrum:
    """``sim.simulate`` (or ``simulate``, a function of the same signature) under the campaign's wall-time
    limit.

    Simulators with their own ``timeout`` (FEFF: a child process killed at the limit) enforce it
    themselves. Others (the PDF engine runs in this process, in milliseconds) are run in a forked child
    process that is killed at the limit: a C extension cannot be interrupted from Python, only killed.
    """
    run = simulate or sim.simulate
    if limit is None or hasattr(sim, "timeout"):
        return run(structure, workdir=workdir)
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # fork: the child inherits the simulator, no re-import (tens of ms)
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        import traceback

        try:
            send.send(("ok", run(structure, workdir=workdir).model_dump_json()))
        except _SIM_ERRORS as exc:  # a failed simulation: one line for the evaluation record
            send.send(("failed", _one_line(exc)))
        except BaseException as exc:  # noqa: BLE001 - a bug: its traceback goes to the parent's job error
            send.send(("raised", f"{_one_line(exc)}\n{traceback.format_exc()}"))
        finally:
            send.close()

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(limit):
            proc.kill()
            raise _WallTime(f"{sim.technique} simulation timed out after {limit:g} s and was killed")
        status, payload = recv.recv()
    except EOFError:
        # the code crashed the process (a C extension's segfault or abort): a failed simulation
        raise SimulationError(
            f"{sim.technique} simulation process died (exit code {proc.exitcode})"
        ) from None
    finally:
        proc.join(5)
        recv.close()
    if status == "failed":
        raise _ChildError(payload)
    if status == "raised":
        raise ChildProcessError(f"the {sim.technique} simulation raised in its child process: {payload}")
    return Spectrum.model_validate_json(payload)


class _ChildError(SimulationError):
    """A simulator error raised in the child process, already as one line ``Type: message``."""

    def __str__(self) -> str:
        return self.args[0]


class _WallTime(SimulationError):
    """A simulator call killed at the campaign's wall-time limit (message says 'timed out after')."""


_SIM_ERRORS = (AsoError,)
"""What a simulator raises when the *simulation* fails (:class:`~aso_workflows.errors.SimulationError`,
:class:`~aso_workflows.errors.InputError`): recorded as a failed evaluation. Anything else propagates."""


def simulate_technique(state: CampaignState, pid: str, technique: str) -> SimulationResult:
    """Simulate one candidate with one technique (all absorbers in this process for XAS).

    A failed simulation is returned (``status`` ``failed``, with ``error`` and ``failure_kind``), not
    raised, so the iteration goes on and the campaign proposes a replacement. XAS absorbers run one by
    one through :func:`simulate_absorber` and :func:`combine_absorbers`, so the rule for failed absorbers
    is the same with and without the per-absorber fan-out.
    """
    t0 = time.perf_counter()
    prop = state.proposal(pid)
    sim = _simulator(state, technique)
    rows = _site_rows(state, technique)
    # spectra with per-atom rows are cached apart: a cached spectrum without them cannot train them
    cid = _cache_id(prop["fingerprint"], technique, sim.settings_key()) + (":sites" if rows else "")
    if _cached(state, cid):
        return SimulationResult(status="completed", cache_id=cid, cached=True, provenance=provenance(t0))
    structure = Structure.from_dict(prop["structure"])
    problem = _check_geometry(state, structure)
    if problem:
        return _failed(problem, "nonphysical_geometry", t0)
    if isinstance(sim, AbsorberSimulator):
        sites = absorber_sites(state, pid, technique)
        results: list[SimulationResult | dict | None] = [
            simulate_absorber(state, pid, technique, site) for site in sites
        ]
        return combine_absorbers(state, pid, technique, results)
    try:
        limit = getattr(state.config, "simulation_timeout_s", None)
        spectrum = _call_with_limit(
            sim,
            structure,
            _workdir(state, pid, technique),
            limit,
            simulate=_with_site_rows(sim) if rows else None,
        )
    except _SIM_ERRORS as exc:
        return _failed(_one_line(exc), failure_kind(exc), t0)
    spectrum = _prior_check(state, technique, structure, spectrum)
    prov = provenance(t0)
    _put_cache(state, cid, prop["fingerprint"], technique, spectrum, prov)
    return SimulationResult(status="completed", cache_id=cid, provenance=prov)


def _prior_check(state: CampaignState, technique: str, structure: Structure, spectrum: Spectrum) -> Spectrum:
    """The spectrum with ``extra["prior_check"]``: the surrogate's physics prior (pdffit2's G(r) in torch)
    against the engine on this structure, where the campaign's surrogate uses that prior. A mismatch
    above the tolerance is logged and stored, not hidden (``docs/surrogate.md``)."""
    from aso_workflows.optimizers.registry import optimizer_class
    from aso_workflows.surrogate.factory import uses_prior

    cfg = state.config
    if not (
        technique == "pdf"
        and uses_prior(technique, cfg.surrogate, spectrum.engine)
        and optimizer_class(cfg.optimizer).needs_surrogate
    ):
        return spectrum
    from aso_workflows.surrogate.priors.pdf import engine_check

    check = engine_check(spectrum.settings, structure, spectrum.values)
    if not check["ok"]:
        logger.warning(
            "%s: torch PDF model differs from pdffit2 by %.2e (relative) on this structure",
            state.name,
            check["max_rel_error"],
        )
    return spectrum.model_copy(update={"extra": {**spectrum.extra, "prior_check": check}})


def simulate_absorber(state: CampaignState, pid: str, technique: str, site: int) -> SimulationResult:
    """One absorber run of an XAS technique (the cluster fan-out unit)."""
    t0 = time.perf_counter()
    prop = state.proposal(pid)
    sim = _simulator(state, technique)
    assert isinstance(sim, AbsorberSimulator)
    cid = _cache_id(prop["fingerprint"], technique, sim.settings_key(), site)
    if _cached(state, cid):
        return SimulationResult(
            status="completed", cache_id=cid, site=site, cached=True, provenance=provenance(t0)
        )
    structure = Structure.from_dict(prop["structure"])
    problem = _check_geometry(state, structure)
    if problem:
        return _failed(problem, "nonphysical_geometry", t0, site=site)
    try:
        d = sim.write_absorber_inputs(structure, site, _workdir(state, pid, technique) / f"site_{site:04d}")
        spectrum = sim.run_absorber(d)
    except _SIM_ERRORS as exc:
        return _failed(_one_line(exc), failure_kind(exc), t0, site=site)
    prov = provenance(t0)
    _put_cache(state, cid, prop["fingerprint"], technique, spectrum, prov)
    return SimulationResult(status="completed", cache_id=cid, site=site, provenance=prov)


def _result(
    state: CampaignState, pid: str, key: str, raw: SimulationResult | dict | None, what: str
) -> SimulationResult:
    """A job's output as a :class:`SimulationResult`; ``None`` (the job did not deliver) becomes
    ``job_error`` with its traceback when the job raised (:func:`record_job_error`), else ``lost_job``."""
    if raw is not None:
        return SimulationResult.model_validate(raw)
    # the job of this key, the technique's job (for an absorber), or the one job that simulates and
    # records a candidate without fan-out ("record")
    err = None
    for k in dict.fromkeys([key, key.split(":")[0], "record"]):
        err = state.db.job_errors.find_one({"_id": job_error_id(state.name, pid, k)})
        if err is not None:
            break
    if err is not None:
        return SimulationResult(
            status="failed",
            failure_kind="job_error",
            error=f"{what} raised {err['error']}",
            traceback=err.get("traceback"),
        )
    return SimulationResult.lost(what)


def combine_absorbers(
    state: CampaignState, pid: str, technique: str, results: Sequence[SimulationResult | dict | None]
) -> SimulationResult:
    """Average the per-absorber spectra of one candidate into its spectrum (cached like the others).

    ``results`` are the absorber jobs' outputs in the order of ``state.absorber_sites(technique)``. One
    that is ``None`` did not deliver: the job raised (``job_error``) or never reported (lost Slurm job,
    reruns exhausted: ``lost_job``). The candidate succeeds if at least ``min_absorber_fraction`` of its
    absorbers succeeded (default 1: all of them); its spectrum is then the average of the successful
    ones and ``absorbers_failed`` lists the others. Otherwise it fails with every absorber's reason; its
    ``failure_kind`` is the most common one among the failed absorbers (ties: the first in site order).
    """
    t0 = time.perf_counter()
    prop = state.proposal(pid)
    sim = state.simulators[technique]
    assert isinstance(sim, AbsorberSimulator)
    sites = state.absorber_sites(technique)
    checked = []
    for k, r in enumerate(results):
        site = sites[k] if k < len(sites) else None
        res = _result(state, pid, f"{technique}:site{site}", r, f"absorber job (site {site})")
        if res.site is None and site is not None:
            res = res.model_copy(update={"site": site})
        checked.append(res)
    ok = [r for r in checked if r.status == "completed"]
    failed = [r for r in checked if r.status != "completed"]
    if not checked:
        s = Structure.from_dict(prop["structure"])
        try:
            sim.absorber_sites(s)
            why = "no absorber sites"
        except InputError as exc:
            why = _one_line(exc)
        return _failed(why, "input_error", t0)
    fraction = float(getattr(state.config, "min_absorber_fraction", 1.0))
    if failed and len(ok) < fraction * len(checked) - 1e-9:
        errs = "; ".join(f"site {r.site}: {r.error}" for r in failed)
        kinds = [r.failure_kind or "simulator_error" for r in failed]
        kind = max(kinds, key=kinds.count)  # ties: the first failed absorber (site order)
        return _failed(
            f"{len(failed)} of {len(checked)} absorber run(s) failed: {errs}"[:1000],
            kind,
            t0,
            absorbers_failed=[r.site for r in failed if r.site is not None],
            traceback=next((r.traceback for r in failed if r.traceback), None),
        )
    spectra = [state.spectrum(_cache_id_of(r)) for r in ok]
    combined = sim.combine(spectra, [r.site for r in ok if r.site is not None])
    cid = _cache_id(prop["fingerprint"], technique, sim.settings_key())
    prov = provenance(t0)
    prov.absorber_jobs = [r.provenance.model_dump(mode="json") for r in ok if r.provenance is not None]
    out = SimulationResult(status="completed", cache_id=cid, provenance=prov)
    if failed:
        prov.absorbers_failed = [
            {"site": r.site, "error": r.error, "failure_kind": r.failure_kind} for r in failed
        ]
        out.absorbers_failed = [r.site for r in failed if r.site is not None]
    _put_cache(state, cid, prop["fingerprint"], technique, combined, prov)
    return out


def record_evaluation(
    state: CampaignState, pid: str, results: Mapping[str, SimulationResult | dict | None]
) -> RecordResult:
    """Write the evaluation of one candidate (all techniques) and its mismatch; idempotent.

    A result that is ``None`` is a job that did not deliver: the evaluation is recorded as failed with
    ``failure_kind`` ``job_error`` (the job raised; its traceback is kept) or ``lost_job`` (it never
    reported: Slurm job lost and reruns exhausted).
    """
    prop = state.proposal(pid)
    eid = evaluation_id(state.name, prop["fingerprint"], state.settings_key)
    existing = state.db.evaluations.find_one({"_id": eid}, {"status": 1, "objective": 1, "proposal_id": 1})
    if existing is not None:
        if existing.get("proposal_id") != pid:
            # the same structure proposed again: this proposal shares the stored evaluation
            state.db.proposals.update_one(
                {"_id": pid}, {"$set": ProposalDoc.set_fields(status=existing["status"], evaluation_id=eid)}
            )
        return RecordResult(evaluation_id=eid, status=existing["status"], objective=existing.get("objective"))
    checked = {t: _result(state, pid, t, r, f"{t} simulation job") for t, r in results.items()}
    failed = {t: r for t, r in checked.items() if r.status != "completed"}
    fields: dict = {}
    partial = {t: r.absorbers_failed for t, r in checked.items() if r.absorbers_failed}
    if failed:
        kinds = [r.failure_kind or "simulator_error" for r in failed.values()]
        fields.update(
            status="failed",
            error="; ".join(f"{t}: {r.error}" for t, r in failed.items()),
            failure_kind=kinds[0],
            traceback=next((r.traceback for r in failed.values() if r.traceback), None),
        )
    else:
        spectra = {t: state.spectrum(_cache_id_of(r)) for t, r in checked.items()}
        state.check_engines(spectra)
        fields.update(_fitted_fields(state, prop, checked, spectra))
    doc = EvaluationDoc(
        _id=eid,
        campaign=state.name,
        iteration=prop["iteration"],
        candidate=prop["candidate"],
        proposal_id=pid,
        kind=prop.get("kind", "proposal"),
        fingerprint=prop["fingerprint"],
        settings_key=state.settings_key,
        structure=prop["structure"],
        provenance={t: r.provenance for t, r in checked.items()},
        absorbers_failed=partial or None,
        **fields,
    )
    state.db.evaluations.update_one({"_id": eid}, {"$setOnInsert": doc.to_mongo_fields()}, upsert=True)
    stored = state.db.evaluations.find_one({"_id": eid}, {"status": 1, "objective": 1}) or doc.to_mongo()
    state.db.proposals.update_one(
        {"_id": pid}, {"$set": ProposalDoc.set_fields(status=stored["status"], evaluation_id=eid)}
    )
    refresh_counters(state)
    progress.notify(state)
    return RecordResult(evaluation_id=eid, status=stored["status"], objective=stored.get("objective"))


def _fitted_fields(
    state: CampaignState, prop: dict, checked: Mapping[str, SimulationResult], spectra: dict[str, Spectrum]
) -> dict:
    """The evaluation's fields after the nuisance fit of every technique (docs/measured.md).

    Each target's ``fit`` runs here, in the record job (also under Slurm), on the candidate's simulated
    spectra: fitted values, Rw/R and the MSE of the *fitted* spectrum are stored, and the fitted
    spectrum is cached beside the simulated one (``<cache id>:fit:<fit key>``, idempotent) as the
    spectrum the surrogate learns (``spectra``); the simulated ones stay in ``simulated_spectra``. A fit
    that fails on the candidate (a re-simulation with fitted settings failing) fails the evaluation like
    a failed simulation.
    """
    structure = Structure.from_dict(prop["structure"])
    t0 = time.perf_counter()
    try:
        total, fits = state.objective.evaluate_fitted(spectra, structure, _fit_starts(state, prop))
    except AsoError as exc:
        return {
            "status": "failed",
            "error": f"nuisance fit: {_one_line(exc)}",
            "failure_kind": failure_kind(exc),
        }
    learned = {}
    for t, fit in fits.items():
        cid = _cache_id_of(checked[t])
        if not fit.parameters and fit.spectrum == spectra[t]:
            learned[t] = cid  # nothing fitted and the same grid: the simulation is the fitted spectrum
            continue
        fid = f"{cid}:fit:{state.fit_keys[t]}"
        _put_cache(state, fid, prop["fingerprint"], t, fit.spectrum, provenance(t0))
        learned[t] = fid
    return {
        "status": "completed",
        "objective": float(total),
        "mse": {t: float(f.mse) for t, f in fits.items()},
        "goodness": {t: {"name": f.goodness_name, "value": float(f.goodness)} for t, f in fits.items()},
        "fit": {t: f.summary() for t, f in fits.items() if f.status != "fixed" or f.parameters},
        "spectra": learned,
        "simulated_spectra": {t: r.cache_id for t, r in checked.items()},
    }


def _fit_starts(state: CampaignState, prop: dict) -> dict[str, dict]:
    """A polished candidate's PDF fit starts from the polish's refined values (not its cell: the polished
    structure carries that; not positions, which are no fit parameters), so that it lands where the
    polish did; every other fit from the settings. (Starting every candidate from the start structure's
    fitted values was tried and dropped: on LaMnO3 from ideal positions the start's fit ends in a wrong
    cell, c 8.06 Å for 7.68, and carried every candidate's fit into it.)"""
    from aso_workflows.optimizers.polish import CELL_PARAMETERS

    polish = (prop.get("predicted") or {}).get("polish") or {}
    values = polish.get("parameters") or {}
    keep = {
        k: float(v)
        for k, v in values.items()
        if k not in CELL_PARAMETERS and not k.startswith(("x(", "y(", "z("))
    }
    return {"pdf": keep} if keep and "pdf" in state.simulators else {}


def _cache_id_of(result: SimulationResult) -> str:
    """The spectrum id of a completed simulation (a completed result without one is a bug)."""
    if result.cache_id is None:
        raise RuntimeError(f"a completed simulation result has no spectrum id: {result!r}")
    return result.cache_id


def refresh_counters(state: CampaignState) -> None:
    """Recount ``n_used``, ``n_failed`` and ``best_objective`` of the campaign document from the evaluations.

    Concurrent record jobs may write their counts in either order; the propose step recounts once every
    evaluation of the iteration is in, so the document agrees with the evaluations at each iteration.
    """
    best = state.best(1)
    state.update(
        n_used=state.n_used(),
        n_failed=len(state.evaluations("failed")),
        best_objective=best[0]["objective"] if best else None,
    )


def record_lost(state: CampaignState, iteration: int) -> list[str]:
    """Record, as failed, every proposal of ``iteration`` that has no evaluation.

    Called once all evaluation jobs of the iteration have ended (completed, raised or, after their
    reruns, given up): a candidate whose jobs did not deliver is then visible in ``aso status``
    (``job_error`` with its traceback, or ``lost_job``) and counts as a failure (the campaign proposes a
    replacement) instead of silently disappearing. Idempotent. Returns the evaluation ids written.
    """
    out = []
    for p in state.proposals(iteration):
        eid = evaluation_id(state.name, p["fingerprint"], state.settings_key)
        if state.db.evaluations.find_one({"_id": eid}, {"_id": 1}) is None:
            rec = record_evaluation(state, p["_id"], dict.fromkeys(state.simulators))
            out.append(rec.evaluation_id)
    refresh_counters(state)
    return out


def job_error_id(campaign: str, where: str, key: str) -> str:
    """The ``_id`` of a job error: the campaign, the proposal id (or ``iteration N``) and the job's key."""
    return f"{campaign}|{where}|{key}"


def record_job_error(
    db: CampaignDB, campaign: str, where: str, key: str, exc: BaseException, iteration: int | None
) -> None:
    """Keep the traceback of a job that raised, in the ``job_errors`` collection (one per job).

    ``where`` is the proposal id (evaluation jobs) or ``iteration N`` (train, propose, start); ``key``
    the technique (``pdf``; ``exafs:site3`` for one absorber run), ``record``, or the job's kind. The
    record job and the local runner read it back: a candidate whose job raised is recorded as
    ``job_error`` with this traceback, never as a lost job and never as a failed simulation.
    """
    import traceback

    doc = JobErrorDoc(
        _id=job_error_id(campaign, where, key),
        campaign=campaign,
        where=where,
        key=key,
        iteration=iteration,
        error=_one_line(exc),
        traceback="".join(traceback.format_exception(exc))[-20000:],
        job_uuid=_current_job_uuid(),
        host=socket.gethostname(),
    )
    db.job_errors.update_one({"_id": doc.id}, {"$set": doc.to_mongo_fields()}, upsert=True)


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 500 characters)."""
    if isinstance(exc, _ChildError):
        return str(exc)[:500]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
