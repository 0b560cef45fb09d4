"""Training the surrogates and proposing the next candidates (what the train and propose jobs do)."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pymatgen.core import Structure

from aso_workflows.campaign.evaluate import provenance
from aso_workflows.campaign.state import CampaignState
from aso_workflows.config import CampaignConfig
from aso_workflows.errors import InputError
from aso_workflows.optimizers import ProposalContext, make_optimizer
from aso_workflows.schemas import CampaignDoc, ModelDoc, SpectrumData, StructureDoc, now, plain
from aso_workflows.store import CampaignDB

if TYPE_CHECKING:
    from aso_workflows.spectra.spectrum import Spectrum

logger = logging.getLogger(__name__)

__all__ = [
    "train_models",
    "load_models",
    "stored_model_ids",
    "propose_candidates",
    "init_campaign",
    "read_inputs",
    "check_existing",
    "resolved_target_settings",
    "resume_point",
    "should_stop",
    "max_failed",
    "device_warnings",
]


def _model_id(state: CampaignState, iteration: int, technique: str) -> str:
    return f"{state.name}:{iteration:04d}:{technique}"


def device_warnings(requested: str) -> list[str]:
    """Why the training job's device is not what its queue promised (empty when all is well).

    A training job routed to the GPU queue (its ``_category`` is ``gpu``) inside a Slurm job that finds
    no CUDA device trains on the CPU, slowly: that is worth a warning in the log and in the model
    document. When the campaign asks for ``surrogate.device: cuda`` explicitly, no CUDA is an error.

    Raises
    ------
    InputError
        On ``surrogate.device`` when CUDA was asked for and none is visible.
    """
    import socket

    import torch

    if torch.cuda.is_available():
        return []
    host = socket.gethostname()
    if requested.startswith("cuda"):
        raise InputError(
            "surrogate.device", f"{requested!r} asked for, but no CUDA device is visible on {host}"
        )
    from jobflow import CURRENT_JOB

    job = CURRENT_JOB.job
    category = (job.config.manager_config or {}).get("_category") if job is not None else None
    if category == "gpu" and os.environ.get("SLURM_JOB_ID"):
        partition = os.environ.get("SLURM_JOB_PARTITION", "?")
        return [
            f"routed to the GPU queue (Slurm job {os.environ['SLURM_JOB_ID']}, partition {partition}, "
            f"host {host}) but no CUDA device is visible: trained on the CPU"
        ]
    return []


_SIMULATION_EXTRAS = ("feff_paths", "feff_chi_paths")
"""What a fitted spectrum takes over from its simulation for the surrogate's prior (FEFF's paths)."""


def _training_spectrum(state: CampaignState, evaluation: dict, technique: str) -> Spectrum:
    """The spectrum the surrogate learns for ``evaluation``: the fitted one (after the nuisance fit of a
    measured target), carrying its simulation's FEFF paths, which the EXAFS prior is built from (a fit
    re-sums the paths; the cached fitted spectrum does not keep them)."""
    spectrum = state.spectrum(evaluation["spectra"][technique])
    simulated = (evaluation.get("simulated_spectra") or {}).get(technique)
    missing = [k for k in _SIMULATION_EXTRAS if k not in spectrum.extra]
    if not missing or simulated is None or simulated == evaluation["spectra"][technique]:
        return spectrum
    extra = state.spectrum(simulated).extra
    taken = {k: extra[k] for k in missing if k in extra}
    return spectrum.model_copy(update={"extra": {**spectrum.extra, **taken}}) if taken else spectrum


def train_models(state: CampaignState, iteration: int, progress_bar: bool = False) -> dict:
    """Train one surrogate ensemble per technique on every completed evaluation; idempotent per iteration.

    Returns ``{technique: model document id}``. Weights go to the blob store (files or GridFS), never
    inline in a document or a FireWorks action.
    """
    import torch

    from aso_workflows.surrogate.factory import surrogate_for_target
    from aso_workflows.surrogate.residual import PriorResidualSurrogate

    out = {}
    evals = state.evaluations("completed")
    structures = [Structure.from_dict(e["structure"]) for e in evals]
    settings = state.config.surrogate
    warnings = device_warnings(str(settings.device))
    for message in warnings:
        logger.warning("training %s iteration %d: %s", state.name, iteration, message)
    for technique, sim in state.simulators.items():
        mid = _model_id(state, iteration, technique)
        if state.db.models.find_one({"_id": mid, "status": "completed"}) is not None:
            out[technique] = mid
            continue
        t0 = time.perf_counter()
        spectra = [_training_spectrum(state, e, technique) for e in evals]
        # level (PDF: surrogate.pdf_level) and readout range (PDF: the target's rmax) per technique
        model = surrogate_for_target(
            technique,
            state.targets[technique].grid,
            state.species,
            dataclasses.replace(settings, seed=settings.seed + 1000 * iteration),
            absorber=getattr(sim, "absorber", None),
            simulator=sim,
        )
        if isinstance(model, PriorResidualSurrogate):  # a prior may pick its reference near the best
            metrics = model.fit(structures, spectra, objectives=[float(e["objective"]) for e in evals])
        else:
            metrics = model.fit(structures, spectra)
        buf = io.BytesIO()
        model.save(buf)
        ref = state.db.put_blob(f"{state.name}/model_{iteration:04d}_{technique}.pt", buf.getvalue())
        doc = ModelDoc(
            _id=mid,
            campaign=state.name,
            iteration=iteration,
            technique=technique,
            n_train=len(structures),
            metrics=plain(metrics),
            weights=ref,
            device=str(getattr(model, "device", "cpu")),
            cuda=torch.cuda.is_available(),
            warnings=warnings,
            seconds=round(time.perf_counter() - t0, 2),
            provenance=provenance(t0),
        )
        state.db.models.update_one({"_id": mid}, {"$set": doc.to_mongo_fields()}, upsert=True)
        out[technique] = mid
    return out


def stored_model_ids(state: CampaignState, iteration: int) -> dict:
    """``{technique: model id}`` of the completed models trained in ``iteration`` (empty if none)."""
    ids = {t: _model_id(state, iteration, t) for t in state.simulators}
    return {t: mid for t, mid in ids.items() if state.db.models.find_one({"_id": mid, "status": "completed"})}


def load_models(state: CampaignState, model_ids: dict) -> dict:
    from aso_workflows.surrogate.residual import load_surrogate

    models = {}
    for technique, mid in model_ids.items():
        doc = state.db.models.find_one({"_id": mid})
        if doc is None:  # the ids come from the training job, which stored these models
            raise KeyError(f"model {mid!r} is missing from the models collection")
        models[technique] = load_surrogate(state.db.get_blob(doc["weights"]))
    return models


def should_stop(state: CampaignState) -> str | None:
    """Why the campaign ends now, or ``None`` to go on."""
    cfg = state.config
    if state.n_used() >= cfg.budget:
        return "budget spent"
    best = state.best(1)
    if cfg.target_mismatch is not None and best and best[0]["objective"] <= cfg.target_mismatch:
        return f"target mismatch {cfg.target_mismatch:g} reached"
    if cfg.max_failures and state.consecutive_failures() >= cfg.max_failures:
        return f"{cfg.max_failures} simulations in a row failed"
    cap = max_failed(cfg)
    n_failed = len(state.evaluations("failed"))
    if n_failed >= cap:
        return f"{n_failed} simulations failed in all (max_failed {cap})"
    empty = empty_rounds(state)
    if empty >= EMPTY_ROUNDS:
        return (
            f"no new candidate in {empty} iterations in a row (the search finds nothing distinct to "
            f"simulate; {cfg.budget - state.n_used()} of the budget left)"
        )
    return None


EMPTY_ROUNDS = 3
"""Iterations in a row whose proposal found no candidate after which a campaign ends (converged)."""


def empty_rounds(state: CampaignState) -> int:
    """How many of the latest iterations (counting back from the campaign's current one) stored no
    proposal of the optimiser: it found nothing distinct to simulate (each round retries with another
    seed). A polish iteration counts as empty, so that a campaign polished after such a stop ends."""
    current = int(state.doc.get("iteration") or 0)
    proposed = {  # the polish (the exact finish after such a stop) proposes no new candidate
        int(p["iteration"])
        for p in state.db.proposals.find({"campaign": state.name}, {"iteration": 1, "kind": 1})
        if p.get("kind") != "polish"
    }
    n = 0
    while current - n > 0 and (current - n) not in proposed:
        n += 1
    return n


def polish_pending(state: CampaignState, reason: str) -> bool:
    """Whether the campaign, stopping for ``reason``, still has its ``polish:`` to run (once, after the
    budget is spent or the target mismatch reached; never after failures)."""
    if state.config.polish is None or not reason.startswith(
        ("budget spent", "target mismatch", "no new candidate")
    ):
        return False
    return not any(p.get("kind") == "polish" for p in state.proposals())


def propose_polish(state: CampaignState, iteration: int) -> list[str]:
    """Store the polish proposals as ``iteration`` (idempotent; :mod:`aso_workflows.optimizers.polish`)."""
    existing = state.proposals(iteration)
    if existing:
        return [d["_id"] for d in existing]
    assert state.config.polish is not None
    t0 = time.perf_counter()
    proposals = state.config.polish.proposals(state)
    seconds = round(time.perf_counter() - t0, 3)
    items = [
        {
            "structure": p.structure,
            "kind": p.kind,
            "predicted": plain(p.predicted),
            "seconds": seconds,
            "note": p.note,
        }
        for p in proposals
    ]
    return state.add_proposals(iteration, items)


def is_polish_iteration(state: CampaignState, iteration: int) -> bool:
    """Whether ``iteration`` is the campaign's polish (its surrogate is not retrained after it)."""
    props = state.proposals(iteration)
    return bool(props) and all(p.get("kind") == "polish" for p in props)


def max_failed(cfg: CampaignConfig) -> int:
    """The campaign's cap on failed simulations in all (``max_failed``; default: the budget).

    Each failure is replaced by a new proposal, so without a cap a campaign whose every other
    candidate fails would run twice as many simulations as planned; the cap bounds the retries.
    """
    cap = getattr(cfg, "max_failed", None)
    return int(cfg.budget if cap is None else cap)


def propose_candidates(state: CampaignState, iteration: int, model_ids: dict | None) -> list[str]:
    """Propose the candidates of ``iteration`` (idempotent: stored proposals are reused).

    A batch is complete once the campaign document's ``iteration`` reached ``iteration`` (the propose
    job sets it after storing the batch). A batch cut short by a crash is proposed again: stored
    candidates keep their structure (keyed writes), the missing ones are filled in.
    """
    existing = state.proposals(iteration)
    if existing and int(state.doc.get("iteration") or 0) >= iteration:
        return [d["_id"] for d in existing]
    cfg = state.config
    n_used = state.n_used()
    evals = state.evaluations("completed")
    # structures not to propose again: proposed but not evaluated, and those that failed (a failed
    # structure is never simulated again: its evaluation key exists, so a re-proposal would be wasted)
    all_evals = state.evaluations(status=None)
    evaluated_pids = {e["proposal_id"] for e in all_evals}
    pending = [
        Structure.from_dict(p["structure"]) for p in state.proposals() if p["_id"] not in evaluated_pids
    ]
    pending += [Structure.from_dict(e["structure"]) for e in all_evals if e["status"] == "failed"]
    ranked = sorted(evals, key=lambda e: e["objective"])
    q = max(1, min(cfg.batch_size, cfg.budget - n_used))
    optimizer = make_optimizer(cfg.optimizer, cfg)
    models = load_models(state, model_ids) if optimizer.needs_surrogate and model_ids else None
    ctx = ProposalContext(
        state=state,
        evaluated=[(Structure.from_dict(e["structure"]), e["objective"]) for e in ranked],
        pending=pending,
        models=models,
        iteration=iteration,
        n_used=n_used,
        budget=cfg.budget,
        q=q,
        seed=cfg.seed * 100003 + iteration,
    )
    t0 = time.perf_counter()
    proposals = optimizer.propose(ctx)
    seconds = round(time.perf_counter() - t0, 3)
    items = [
        {
            "structure": p.structure,
            "kind": p.kind or cfg.optimizer,  # e.g. "fallback": a random perturbation, not the method's
            "predicted": plain(p.predicted) if p.predicted else None,
            "acquisition": p.acquisition,
            "seconds": seconds,
            "note": p.note,
        }
        for p in proposals[:q]
    ]
    if not items:
        logger.warning(
            "iteration %d: the %s optimiser proposed no candidate (nothing distinct to simulate)",
            iteration,
            cfg.optimizer,
        )
    return state.add_proposals(iteration, items)


def resolved_target_settings(config: CampaignConfig) -> list[dict]:
    """Each target's simulator settings with the engine resolved (``engine: auto`` → the code that
    imports here), as the campaign stores them: every job then uses that code, or fails saying so."""
    from aso_workflows.spectra.registry import make_simulator

    out = []
    for t in config.targets:
        settings = dict(t.settings)
        resolved = make_simulator(t.technique, **settings).settings_dict()
        if "engine" in resolved:
            settings["engine"] = resolved["engine"]
        out.append(settings)
    return out


def read_inputs(config: CampaignConfig) -> dict:
    """The campaign's input files, read now: ``{"start": structure, "targets": {technique: {...}}}``.

    Each target is ``{"structure": ...}`` (a target structure, simulated by the start job) or
    ``{"spectrum": ...}`` (a measured spectrum on the simulator's grid), as JSON-able dicts. The runner
    reads them where the files are and gives them to :class:`~aso_workflows.campaign.jobs.CampaignMaker`,
    so the start job needs no access to the user's files (it may run on a compute node).
    """
    from aso_workflows.spectra.registry import make_simulator
    from aso_workflows.spectra.targets import read_target
    from aso_workflows.structures import load_structure

    start = load_structure(config.start)
    targets: dict[str, dict] = {}
    for t in config.targets:
        if t.structure is not None:
            ts = load_structure(t.structure)
            if ts.composition.reduced_formula != start.composition.reduced_formula or len(ts) != len(start):
                raise InputError(
                    t.structure, f"target structure {ts.formula} does not match the start {start.formula}"
                )
            targets[t.technique] = {"structure": ts.as_dict(), "path": str(t.structure)}
        else:
            sim = make_simulator(t.technique, **t.settings)
            assert t.file is not None  # TargetConfig holds exactly one of file / structure
            spectrum = read_target(
                t.file, t.technique, simulator=sim, processing=t.processing, **t.read_options
            )
            targets[t.technique] = {"spectrum": spectrum.model_dump(mode="json"), "path": str(t.file)}
    return {"start": start.as_dict(), "targets": targets}


def check_existing(config: CampaignConfig, db: CampaignDB, start: Structure | None = None) -> dict | None:
    """The stored campaign of the same name, after checking it can be continued with ``config``.

    A larger budget or new optimiser settings are taken over later, but a different ``start`` structure
    (when given: ``aso resume`` from the store alone has none) or different targets are refused (they
    would mix incompatible evaluations).

    Raises
    ------
    InputError
        On ``name`` (another start structure) or ``targets`` (other targets or settings).
    """
    from aso_workflows.structures import structure_fingerprint

    existing = db.campaigns.find_one({"_id": config.name}, {"start_fingerprint": 1, "config.targets": 1})
    if existing is None:
        return None
    if start is not None and existing["start_fingerprint"] != structure_fingerprint(start):
        raise InputError(
            "name",
            f"campaign {config.name!r} already exists with a different start structure; use another name",
        )
    from aso_workflows.spectra.fit.spec import FitSpec

    old_targets = [
        (t["technique"], t.get("settings"), FitSpec.model_validate(t.get("fit") or {}))
        for t in existing["config"]["targets"]  # campaigns stored before `fit` existed have none
    ]
    settings = resolved_target_settings(config)
    new_targets = [(t.technique, s, t.fit) for t, s in zip(config.targets, settings, strict=True)]
    if old_targets != new_targets:
        raise InputError(
            "targets",
            f"campaign {config.name!r} already exists with other targets/settings/fit; use another name",
        )
    return existing


def init_campaign(
    config: CampaignConfig, db: CampaignDB, workdir: str | Path, inputs: dict | None = None
) -> CampaignState:
    """Create the campaign document (targets, start) and the initial proposals; idempotent.

    ``inputs`` are the campaign's files as read by :func:`read_inputs` (without them: a campaign that
    exists already, resumed from the store alone), and ``inputs["executor"]`` how it runs (recorded in the
    campaign document for ``aso resume``). On a second call with the same name the stored campaign is
    reused (see :func:`check_existing`). The targets' simulator engines are resolved once, here, and
    stored with the campaign.
    """
    from aso_workflows.spectra.base import AbsorberSimulator
    from aso_workflows.spectra.registry import make_simulator
    from aso_workflows.spectra.spectrum import Spectrum
    from aso_workflows.structures import structure_fingerprint

    settings = resolved_target_settings(config)
    config = config.model_copy(
        update={
            "targets": [
                t.model_copy(update={"settings": s}) for t, s in zip(config.targets, settings, strict=True)
            ]
        }
    )
    start = _structure(inputs["start"]) if inputs and "start" in inputs else None
    existing = check_existing(config, db, start)
    executor = (inputs or {}).get("executor")
    if existing is not None:
        fields = {"config": config.to_document(), "updated": now()}
        if executor is not None and executor.get("kind") != "local":
            fields["executor"] = executor  # a local resume keeps the cluster set-up recorded
        db.campaigns.update_one({"_id": config.name}, {"$set": CampaignDoc.set_fields(**fields)})
        state = CampaignState.load(db, config.name)
        if len(state.proposals(0)) < state.config.initial_size + 1:
            _initial_proposals(state)  # the first run died while storing them: same seed, same structures
        return state
    if start is None or inputs is None:
        raise InputError("campaign", f"no campaign named {config.name!r} in {db.spec.redacted()} to resume")

    targets: dict[str, SpectrumData] = {}
    sites: dict[str, list[int]] = {}
    target_structure = None
    for t in config.targets:
        sim = make_simulator(t.technique, **t.settings)
        if isinstance(sim, AbsorberSimulator):
            sites[t.technique] = [int(i) for i in sim.absorber_sites(start)]
        given = inputs["targets"][t.technique]
        if "structure" in given:
            ts = _structure(given["structure"])
            target_structure = ts
            spec = sim.simulate(ts, workdir=_mk(workdir, "target", t.technique))
            spec = spec.model_copy(update={"source": f"simulated from {given['path']}"})
        else:
            spec = Spectrum.model_validate(given.get("spectrum"))
        targets[t.technique] = spec
    doc = CampaignDoc(
        _id=config.name,
        config=config.to_document(),
        budget=config.budget,
        start_structure=StructureDoc.from_pymatgen(start),
        start_fingerprint=structure_fingerprint(start),
        target_structure=StructureDoc.from_pymatgen(target_structure)
        if target_structure is not None
        else None,
        targets=targets,
        absorber_sites=sites,
        executor=executor,
        workdir=str(workdir),
        store=db.spec.redacted(),
    )
    db.campaigns.update_one({"_id": config.name}, {"$setOnInsert": doc.to_mongo_fields()}, upsert=True)
    state = CampaignState.load(db, config.name)
    _initial_proposals(state)
    return state


def resume_point(state: CampaignState) -> tuple[int, list[str]]:
    """The iteration to run (or run again) and its proposal ids, completing a batch cut short.

    The latest iteration with stored proposals is rebuilt; if the propose job died while storing that
    batch, the missing candidates are filled in with the models it used (stored ones keep their
    structure) and the batch is marked complete. Nothing stored is simulated, trained or proposed again.
    """
    it = max(state.last_iteration(), 0)
    if it > 0 and int(state.doc.get("iteration") or 0) < it:
        if is_polish_iteration(state, it):
            propose_polish(state, it)
        else:
            propose_candidates(state, it, stored_model_ids(state, it - 1))
        state.update(iteration=it)
    return it, [p["_id"] for p in state.proposals(it)]


def _initial_proposals(state: CampaignState) -> list[str]:
    """Store the start structure and the seeded initial perturbations as iteration 0 (idempotent)."""
    config = state.config
    from aso_workflows.optimizers.constraint import campaign_constraint

    sampler = dataclasses.replace(
        config.sampler,
        seed=config.seed,
        min_distances=dict(config.min_distances),
        min_distance_scale=config.min_distance_scale,
        constraint=campaign_constraint(state),
    )
    start = state.start
    initial = [{"structure": start, "kind": "start"}]
    initial += [{"structure": s, "kind": "initial"} for s in sampler.sample(start, config.initial_size)]
    return state.add_proposals(0, initial)


def _structure(value: Structure | dict) -> Structure:
    """A structure given as such or as its dict (job arguments that went through FireWorks' JSON come
    back as objects: pymatgen dicts carry ``@class``)."""
    return value if isinstance(value, Structure) else Structure.from_dict(value)


def _mk(base: str | Path, *parts: str) -> Path:
    d = Path(base).joinpath(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d
