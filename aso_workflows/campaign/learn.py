"""Training the surrogates and proposing the next candidates (what the train and propose jobs do)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from aso_workflows.campaign.evaluate import load_spectrum, provenance
from aso_workflows.campaign.state import CampaignState, now
from aso_workflows.optimizers import ProposalContext, make_optimizer

__all__ = [
    "train_models",
    "load_models",
    "stored_model_ids",
    "propose_candidates",
    "init_campaign",
    "should_stop",
    "max_failed",
]


def _model_id(state: CampaignState, iteration: int, technique: str) -> str:
    return f"{state.name}:{iteration:04d}:{technique}"


def train_models(state: CampaignState, iteration: int, progress_bar: bool = False) -> dict:
    """Train one surrogate ensemble per technique on every completed evaluation; idempotent per iteration.

    Returns ``{technique: model document id}``. Weights go to the blob store (files or GridFS), never
    inline in a document or a FireWorks action.
    """
    import torch

    from aso_workflows.surrogate.ensemble import EnsembleSurrogate

    out = {}
    evals = state.evaluations("completed")
    structures = [Structure.from_dict(e["structure"]) for e in evals]
    for technique, sim in state.simulators.items():
        mid = _model_id(state, iteration, technique)
        if state.db.models.find_one({"_id": mid, "status": "completed"}) is not None:
            out[technique] = mid
            continue
        t0 = time.perf_counter()
        spectra = [load_spectrum(state, e["spectra"][technique]) for e in evals]
        level = "graph" if technique == "pdf" else "node"
        absorber = getattr(sim, "absorber", None)
        settings = state.config.surrogate
        import dataclasses

        settings = dataclasses.replace(settings, seed=settings.seed + 1000 * iteration)
        model = EnsembleSurrogate(
            species=state.species,
            output_dim=len(state.targets[technique].values),
            level=level,
            absorber=absorber,
            settings=settings,
        )
        metrics = model.fit(structures, spectra)
        buf = io.BytesIO()
        model.save(buf)
        ref = state.db.put_blob(f"{state.name}/model_{iteration:04d}_{technique}.pt", buf.getvalue())
        doc = {
            "campaign": state.name,
            "iteration": iteration,
            "technique": technique,
            "n_train": len(structures),
            "metrics": _jsonable(metrics),
            "weights": ref,
            "device": str(getattr(model, "device", "cpu")),
            "cuda": torch.cuda.is_available(),
            "seconds": round(time.perf_counter() - t0, 2),
            "provenance": provenance(t0),
            "status": "completed",
            "created": now(),
        }
        state.db.models.update_one(
            {"_id": mid}, {"$set": doc}, upsert=True
        )  # montydb: no upsert in replace_one
        out[technique] = mid
    return out


def stored_model_ids(state: CampaignState, iteration: int) -> dict:
    """``{technique: model id}`` of the completed models trained in ``iteration`` (empty if none)."""
    ids = {t: _model_id(state, iteration, t) for t in state.simulators}
    return {t: mid for t, mid in ids.items() if state.db.models.find_one({"_id": mid, "status": "completed"})}


def load_models(state: CampaignState, model_ids: dict) -> dict:
    from aso_workflows.surrogate.ensemble import EnsembleSurrogate

    models = {}
    for technique, mid in model_ids.items():
        doc = state.db.models.find_one({"_id": mid})
        models[technique] = EnsembleSurrogate.load(io.BytesIO(state.db.get_blob(doc["weights"])))
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
    return None


def max_failed(cfg) -> int:
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
            "kind": cfg.optimizer,
            "predicted": _jsonable(p.predicted) if p.predicted else None,
            "acquisition": p.acquisition,
            "seconds": seconds,
            "note": p.note,
        }
        for p in proposals[:q]
    ]
    return state.add_proposals(iteration, items)


def init_campaign(config, db, workdir) -> CampaignState:
    """Create the campaign document (targets, start) and the initial proposals; idempotent.

    On a second call with the same name the stored campaign is reused: a larger budget or new
    optimiser settings are taken over, but a different start structure or different targets are refused
    (they would mix incompatible evaluations).
    """
    from aso_workflows.errors import InputError
    from aso_workflows.optimizers.sampling import PerturbationSampler  # noqa: F401 - config type
    from aso_workflows.spectra.registry import make_simulator
    from aso_workflows.spectra.targets import read_target
    from aso_workflows.structures import load_structure, structure_fingerprint

    existing = db.campaigns.find_one({"_id": config.name})
    if existing is not None and not Path(config.start).is_file():
        # resuming from the store alone (``aso resume``): the stored start structure is the reference
        start = Structure.from_dict(existing["start_structure"])
    else:
        start = load_structure(config.start)
    if existing is not None:
        if existing["start_fingerprint"] != structure_fingerprint(start):
            raise InputError(
                "name",
                f"campaign {config.name!r} already exists with a different start structure; use another name",
            )
        old_targets = [(t["technique"], t.get("settings")) for t in existing["config"]["targets"]]
        new_targets = [(t.technique, t.settings) for t in config.targets]
        if old_targets != new_targets:
            raise InputError(
                "targets",
                f"campaign {config.name!r} already exists with other targets/settings; use another name",
            )
        db.campaigns.update_one(
            {"_id": config.name}, {"$set": {"config": config.to_document(), "updated": now()}}
        )
        state = CampaignState.load(db, config.name)
        if len(state.proposals(0)) < state.config.initial_size + 1:
            _initial_proposals(state)  # the first run died while storing them: same seed, same structures
        return state

    targets = {}
    target_structure = None
    for t in config.targets:
        sim = make_simulator(t.technique, **t.settings)
        if t.structure is not None:
            ts = load_structure(t.structure)
            if ts.composition.reduced_formula != start.composition.reduced_formula or len(ts) != len(start):
                raise InputError(
                    t.structure, f"target structure {ts.formula} does not match the start {start.formula}"
                )
            target_structure = ts
            spec = sim.simulate(ts, workdir=_mk(workdir, "target", t.technique))
            spec = spec.model_copy(update={"source": f"simulated from {t.structure}"})
        else:
            spec = read_target(t.file, t.technique, grid=sim.grid(), **t.read_options)
        targets[t.technique] = spec.model_dump(mode="json")
    doc = {
        "_id": config.name,
        "config": config.to_document(),
        "status": "running",
        "budget": config.budget,
        "n_used": 0,
        "best_objective": None,
        "start_structure": start.as_dict(),
        "start_fingerprint": structure_fingerprint(start),
        "target_structure": target_structure.as_dict() if target_structure is not None else None,
        "targets": targets,
        "workdir": str(workdir),
        "store": db.spec.redacted(),
        "created": now(),
        "updated": now(),
    }
    db.campaigns.update_one({"_id": config.name}, {"$setOnInsert": doc}, upsert=True)
    state = CampaignState.load(db, config.name)
    _initial_proposals(state)
    return state


def _initial_proposals(state: CampaignState) -> list[str]:
    """Store the start structure and the seeded initial perturbations as iteration 0 (idempotent)."""
    import dataclasses

    config = state.config
    sampler = dataclasses.replace(
        config.sampler,
        seed=config.seed,
        min_distances=dict(config.min_distances),
        min_distance_scale=config.min_distance_scale,
    )
    start = state.start
    initial = [{"structure": start, "kind": "start"}]
    initial += [{"structure": s, "kind": "initial"} for s in sampler.sample(start, config.initial_size)]
    return state.add_proposals(0, initial)


def _mk(base, *parts):
    from pathlib import Path

    d = Path(base).joinpath(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _jsonable(obj):
    """Numpy scalars/arrays → plain Python for MongoDB."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
