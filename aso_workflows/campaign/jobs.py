"""jobflow jobs and Makers of a campaign.

A campaign starts with one job that creates (or finds) it in the store, then each iteration is one
jobflow Flow::

    start ─► evaluate candidate 0 ─┐  (per technique; XAS: one job per absorber site + an average job)
             evaluate candidate 1 ─┼─► train surrogates (GPU job) ─► propose (dynamic job)
             ...                   ┘                                    └─► Response(addition=next iteration)

Makers are pure: ``make()`` only builds jobs from its arguments (no store, no files, no simulation).
Jobs receive only the store spec (a small dict) and ids; structures, spectra and weights are read from
and written to the campaign store, so FireWorks actions stay small (MongoDB's 16 MB document limit) and
every job can run in its own process or Slurm job. Job outputs are the pydantic models of
:mod:`aso_workflows.schemas`.

A job that raises (a bug or a broken environment, not a failed simulation) keeps its traceback in the
store's ``job_errors`` collection before it fails; the candidate is then recorded as ``job_error``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from jobflow import Flow, Job, Maker, Response, job

from aso_workflows.campaign import evaluate as ev
from aso_workflows.campaign import learn
from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.schemas import ProposeResult, RecordResult, SimulationResult

if TYPE_CHECKING:
    from pathlib import Path

    from jobflow.core.reference import OutputReference

    from aso_workflows.config import CampaignConfig

__all__ = [
    "EvaluateCandidateMaker",
    "TrainMaker",
    "ProposeMaker",
    "IterationMaker",
    "CampaignMaker",
]


def _state(store: dict, campaign: str) -> CampaignState:
    return CampaignState.load(get_db(store), campaign)


_F = TypeVar("_F", bound=Callable[..., Any])


def _keeps_traceback(where: Callable[..., tuple[str, str, int | None]]) -> Callable[[_F], _F]:
    """Decorator of a job function: a raised exception is kept in ``job_errors`` before it propagates.

    ``where(*args)`` gives ``(where, key, iteration)`` of the job from its arguments (see
    :func:`~aso_workflows.campaign.evaluate.record_job_error`).
    """

    def deco(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(store: dict, campaign: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(store, campaign, *args, **kwargs)
            except Exception as exc:
                place, key, iteration = where(*args, **kwargs)
                try:
                    ev.record_job_error(get_db(store).db, campaign, place, key, exc, iteration)
                except Exception as inner:  # noqa: BLE001 - the store itself is down: the job's own error wins
                    exc.add_note(f"(its traceback could not be stored: {inner!r})")
                raise

        return cast(_F, wrapper)

    return deco


def _iteration_of(pid: str) -> int:
    return int(pid.rsplit(":", 2)[1])


def _tolerate_lost_parents(j: Job) -> Job:
    """Run ``j`` even when a parent job did not deliver (it raised, or a lost Slurm job after its
    reruns): the missing output arrives as ``None`` and is recorded as a failed ``job_error`` or
    ``lost_job`` evaluation (FireWorks: ``_allow_fizzled_parents``), so one failed job never stalls the
    campaign (docs/reliability.md)."""
    from jobflow.core.reference import OnMissing

    j.config.on_missing_references = OnMissing.NONE
    return j


def _key_numbers(state: CampaignState, rec: RecordResult) -> Response:
    """The record as job output, with its key numbers as FireWorks ``stored_data`` (shown by the web GUI)."""
    ev_doc = state.db.evaluations.find_one({"_id": rec.evaluation_id}, {"mse": 1, "goodness": 1}) or {}
    stored: dict = {"mismatch": rec.objective, "status": rec.status, "mse": ev_doc.get("mse") or {}}
    if ev_doc.get("goodness"):  # Rw / R per technique, e.g. {"pdf": "Rw 0.3256"}
        stored["goodness"] = {t: f"{g['name']} {g['value']:.4g}" for t, g in ev_doc["goodness"].items()}
    return Response(output=rec, stored_data=stored)


def _tag(j: Job, campaign: str, iteration: int, kind: str, **extra: Any) -> Job:
    """Key numbers of a job in its metadata: jobflow copies them into the Firework spec as ``_aso``."""
    j.metadata["_aso"] = {"campaign": campaign, "iteration": int(iteration), "kind": kind, **extra}
    return j


# ---- jobs (thin wrappers; the logic lives in evaluate.py / learn.py) ---------------------------------
@job(output_schema=SimulationResult)
@_keeps_traceback(lambda pid, technique: (pid, technique, _iteration_of(pid)))
def simulate_job(store: dict, campaign: str, pid: str, technique: str) -> SimulationResult:
    """Simulate one candidate with one technique."""
    return ev.simulate_technique(_state(store, campaign), pid, technique)


@job(output_schema=SimulationResult)
@_keeps_traceback(lambda pid, technique, site: (pid, f"{technique}:site{site}", _iteration_of(pid)))
def absorber_job(store: dict, campaign: str, pid: str, technique: str, site: int) -> SimulationResult:
    """One XAS absorber run (the finest fan-out unit)."""
    return ev.simulate_absorber(_state(store, campaign), pid, technique, site)


@job(output_schema=SimulationResult)
@_keeps_traceback(lambda pid, technique, results: (pid, technique, _iteration_of(pid)))
def combine_job(
    store: dict, campaign: str, pid: str, technique: str, results: list[SimulationResult | dict | None]
) -> SimulationResult:
    """Average the absorber runs of one candidate."""
    return ev.combine_absorbers(_state(store, campaign), pid, technique, results)


@job(output_schema=RecordResult)
@_keeps_traceback(lambda pid: (pid, "record", _iteration_of(pid)))
def evaluate_job(store: dict, campaign: str, pid: str) -> Response:
    """Simulate one candidate with every technique and record it, all in one job (no absorber fan-out)."""
    state = _state(store, campaign)
    results: dict[str, SimulationResult | dict | None] = {
        t: ev.simulate_technique(state, pid, t) for t in state.simulators
    }
    return _key_numbers(state, ev.record_evaluation(state, pid, results))


@job(output_schema=RecordResult)
@_keeps_traceback(lambda pid, results: (pid, "record", _iteration_of(pid)))
def record_job(store: dict, campaign: str, pid: str, results: dict) -> Response:
    """Store the evaluation (spectra references + mismatch) of one candidate."""
    state = _state(store, campaign)
    return _key_numbers(state, ev.record_evaluation(state, pid, results))


@job
@_keeps_traceback(lambda iteration, evaluations: (f"iteration {iteration}", "train", iteration))
def train_job(store: dict, campaign: str, iteration: int, evaluations: list) -> dict:
    """Retrain the surrogate ensembles on everything evaluated so far (routed to the GPU worker)."""
    state = _state(store, campaign)
    from aso_workflows.optimizers import optimizer_class

    if not optimizer_class(state.config.optimizer).needs_surrogate or learn.is_polish_iteration(
        state, iteration
    ):
        return {}
    return learn.train_models(state, iteration)


@job(output_schema=ProposeResult)
@_keeps_traceback(lambda iteration, *a, **k: (f"iteration {iteration}", "propose", iteration))
def propose_job(
    store: dict,
    campaign: str,
    iteration: int,
    models: dict | None,
    evaluations: list | None,
    maker: IterationMaker,
) -> Response:
    """Propose the next candidates and append the next iteration (built by ``maker``), or end."""
    state = _state(store, campaign)
    ev.record_lost(state, iteration)  # candidates whose jobs did not deliver count as failed
    reason = learn.should_stop(state)
    if reason is not None and learn.polish_pending(state, reason):
        pids = learn.propose_polish(state, iteration + 1)  # the exact finish: one more iteration
        if pids:
            state.update(iteration=iteration + 1)
            nxt = maker.make(store, campaign, iteration + 1, pids, _plan(state))
            return Response(output=ProposeResult(iteration=iteration + 1, proposals=pids), addition=nxt)
    if reason is not None:
        state.update(status="completed", stop_reason=reason)
        return Response(output=ProposeResult(iteration=iteration, stopped=reason, n_used=state.n_used()))
    if models is None:  # the training job did not deliver (lost, or raised): train here rather than stall
        from aso_workflows.optimizers import optimizer_class

        needs = optimizer_class(state.config.optimizer).needs_surrogate
        models = learn.train_models(state, iteration) if needs else {}
    pids = learn.propose_candidates(state, iteration + 1, models)
    state.update(iteration=iteration + 1)
    nxt = maker.make(store, campaign, iteration + 1, pids, _plan(state))
    return Response(output=ProposeResult(iteration=iteration + 1, proposals=pids), addition=nxt)


@job
@_keeps_traceback(lambda config, inputs, workdir, maker: ("iteration 0", "start", 0))
def start_job(
    store: dict, campaign: str, config: dict, inputs: dict | None, workdir: str, maker: IterationMaker
) -> Response:
    """Create the campaign in the store (target spectra, initial structures) or find it, then append
    the iteration to run: the first one, or the latest one again on a resume (nothing stored is redone).
    ``inputs`` are the campaign's files as the runner read them (:func:`~.learn.read_inputs`)."""
    from aso_workflows.config import CampaignConfig

    cfg = CampaignConfig.model_validate(config)
    state = learn.init_campaign(cfg, get_db(store), workdir, inputs)
    iteration, pids = learn.resume_point(state)
    flow = maker.make(store, campaign, iteration, pids, _plan(state))
    return Response(output={"iteration": iteration, "proposals": pids}, addition=flow)


def _plan(state: CampaignState) -> dict[str, list[int] | None]:
    """``{technique: absorber sites}`` (``None`` for techniques without absorbers): what the pure
    Makers need to know about a campaign to build an iteration."""
    from aso_workflows.spectra.base import AbsorberSimulator

    return {
        t: state.absorber_sites(t) if isinstance(sim, AbsorberSimulator) else None
        for t, sim in state.simulators.items()
    }


# ---- Makers ---------------------------------------------------------------------------------------
def _cand_name(campaign: str, pid: str) -> str:
    _, it, cand = pid.rsplit(":", 2)
    return f"{campaign} / it {int(it)} / cand {int(cand)}"


def _cand_tag(j: Job, campaign: str, pid: str, kind: str, technique: str, **extra: Any) -> Job:
    _, it, cand = pid.rsplit(":", 2)
    return _tag(j, campaign, int(it), kind, candidate=int(cand), technique=technique, **extra)


@dataclass
class EvaluateCandidateMaker(Maker):
    """Evaluate one candidate with every target technique.

    XAS techniques fan out into one job per absorber site plus an averaging job; PDF is one job.
    With ``split_absorbers`` off, or when no technique has absorbers, one job simulates and records.
    """

    name: str = "evaluate"
    split_absorbers: bool = True

    def make(self, store: dict, campaign: str, pid: str, plan: dict[str, list[int] | None]) -> Flow:
        """The evaluation flow of candidate ``pid``; ``plan`` is ``{technique: absorber sites or None}``."""
        base = _cand_name(campaign, pid)
        techniques = "+".join(plan)
        if not (self.split_absorbers and any(sites is not None for sites in plan.values())):
            j = evaluate_job(store, campaign, pid)
            j.name = f"{base} / {techniques}"
            _cand_tag(j, campaign, pid, "evaluate", techniques)
            return Flow([j], output=j.output, name=base)
        jobs: list[Job | Flow] = []
        results = {}
        for technique, sites in plan.items():
            if sites is not None:
                site_jobs = []
                for site in sites:
                    j = absorber_job(store, campaign, pid, technique, site)
                    j.name = f"{base} / {technique} / site {site}"
                    _cand_tag(j, campaign, pid, "absorber", technique, site=int(site))
                    site_jobs.append(j)
                c = _tolerate_lost_parents(
                    combine_job(store, campaign, pid, technique, [j.output for j in site_jobs])
                )
                c.name = f"{base} / {technique} / average"
                _cand_tag(c, campaign, pid, "average", technique)
                jobs += site_jobs + [c]
                results[technique] = c.output
            else:
                j = simulate_job(store, campaign, pid, technique)
                j.name = f"{base} / {technique}"
                _cand_tag(j, campaign, pid, "simulate", technique)
                jobs.append(j)
                results[technique] = j.output
        rec = _tolerate_lost_parents(record_job(store, campaign, pid, results))
        rec.name = f"{base} / record"
        _cand_tag(rec, campaign, pid, "record", techniques)
        return Flow(jobs + [rec], output=rec.output, name=base)


# What a job started in advance for the training imports while it waits (``_preload``: the cluster's
# standby jobs, docs/cluster.md): the job module, torch and the surrogate and proposal code.
_TRAIN_PRELOAD = [
    "aso_workflows.campaign.jobs",
    "torch",
    "aso_workflows.surrogate.factory",
    "aso_workflows.surrogate.residual",
    "aso_workflows.optimizers.aso",
]


@dataclass
class TrainMaker(Maker):
    """Retrain the surrogate ensembles; tagged ``_category: gpu`` so FireWorks routes it to GPU workers
    (``_preload``: the modules a GPU job started in advance for it imports while it waits)."""

    name: str = "train"
    manager_config: dict = field(
        default_factory=lambda: {"_category": "gpu", "_preload": list(_TRAIN_PRELOAD)}
    )

    def make(self, store: dict, campaign: str, iteration: int, evaluations: list) -> Job:
        j = _tolerate_lost_parents(train_job(store, campaign, iteration, evaluations))
        j.name = f"{campaign} / it {iteration} / train"
        _tag(j, campaign, iteration, "train")
        j.update_config({"manager_config": dict(self.manager_config)})
        return j


@dataclass
class ProposeMaker(Maker):
    """The dynamic job: proposes the next candidates and appends the next iteration with ``maker``.

    Tagged ``_category: gpu`` like the training: the proposal searches with the surrogate (torch), and
    on a cluster it runs right after the training in the same GPU job (``docs/cluster.md``).
    """

    name: str = "propose"
    manager_config: dict = field(default_factory=lambda: {"_category": "gpu"})

    def make(
        self,
        store: dict,
        campaign: str,
        iteration: int,
        models: dict | OutputReference,
        evaluations: list,
        maker: IterationMaker,
    ) -> Job:
        j = _tolerate_lost_parents(propose_job(store, campaign, iteration, models, evaluations, maker))
        j.name = f"{campaign} / it {iteration} / propose"
        _tag(j, campaign, iteration, "propose")
        # the iteration it appends keeps its own categories (evaluations: none, training: gpu): jobflow
        # would otherwise pass this job's manager_config on to every job it adds
        config = {"manager_config": dict(self.manager_config), "pass_manager_config": False}
        j.update_config(config, dynamic=False)
        return j


@dataclass
class IterationMaker(Maker):
    """One iteration: evaluate its candidates (fan-out), retrain, propose (dynamic).

    The propose job appends the next iteration with this same Maker (its settings travel with the job).
    """

    name: str = "iteration"
    evaluate: EvaluateCandidateMaker = field(default_factory=EvaluateCandidateMaker)
    train: TrainMaker = field(default_factory=TrainMaker)
    propose: ProposeMaker = field(default_factory=ProposeMaker)

    def make(
        self, store: dict, campaign: str, iteration: int, pids: list[str], plan: dict[str, list[int] | None]
    ) -> Flow:
        evals = [self.evaluate.make(store, campaign, pid, plan) for pid in pids]
        outputs = [f.output for f in evals]
        tr = self.train.make(store, campaign, iteration, outputs)
        pr = self.propose.make(store, campaign, iteration, tr.output, outputs, self)
        return Flow(evals + [tr, pr], output=pr.output, name=f"{campaign} / iteration {iteration}")


@dataclass
class CampaignMaker(Maker):
    """The flow that starts — or resumes — a campaign.

    One job creates the campaign from ``config`` and its ``inputs`` (target spectra, initial structures),
    or finds it in the store when it exists, and appends the iteration to run with ``iteration``: the first one, or the
    latest stored one on a resume (evaluations, models and proposals already stored are reused, so
    nothing is simulated twice).
    """

    name: str = "campaign"
    iteration: IterationMaker = field(default_factory=IterationMaker)

    def make(self, config: CampaignConfig, workdir: str | Path, inputs: dict | None = None) -> Flow:
        """The start flow of ``config``'s campaign; ``inputs`` as :func:`~.learn.read_inputs` gives them
        (``None`` to resume a campaign that is in the store already)."""
        store = config.store_spec().as_dict()
        j = start_job(store, config.name, config.to_document(), inputs, str(workdir), self.iteration)
        j.name = f"{config.name} / start"
        _tag(j, config.name, 0, "start")
        return Flow([j], output=j.output, name=config.name)
