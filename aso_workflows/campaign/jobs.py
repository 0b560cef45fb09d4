"""jobflow jobs and Makers of a campaign.

Each iteration is one jobflow Flow::

    evaluate candidate 0 ─┐  (per technique; XAS: one job per absorber site + an average job)
    evaluate candidate 1 ─┼─► train surrogates (GPU job) ─► propose (dynamic job)
    ...                   ┘                                    └─► Response(addition=next iteration)

Jobs receive only the store spec (a small dict) and ids; structures, spectra and weights are read from
and written to the campaign store, so FireWorks actions stay small (MongoDB's 16 MB document limit) and
every job can run in its own process or Slurm job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobflow import Flow, Job, Maker, Response, job

from aso_workflows.campaign import evaluate as ev
from aso_workflows.campaign import learn
from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.spectra.base import AbsorberSimulator

__all__ = [
    "EvaluateCandidateMaker",
    "TrainMaker",
    "ProposeMaker",
    "IterationMaker",
    "CampaignMaker",
]


def _state(store: dict, campaign: str) -> CampaignState:
    return CampaignState.load(get_db(store), campaign)


def _tolerate_lost_parents(j: Job) -> Job:
    """Run ``j`` even when a parent job was given up (lost Slurm job after its reruns): the missing
    output arrives as ``None`` and is recorded as a failed ``lost_job`` evaluation (FireWorks:
    ``_allow_fizzled_parents``), so one lost job never stalls the campaign (docs/reliability.md)."""
    from jobflow.core.reference import OnMissing

    j.config.on_missing_references = OnMissing.NONE
    return j


def _key_numbers(state: CampaignState, rec: dict) -> Response:
    """The record as job output, with its key numbers as FireWorks ``stored_data`` (shown by the web GUI)."""
    ev_doc = state.db.evaluations.find_one({"_id": rec["evaluation_id"]}, {"mse": 1}) or {}
    stored = {"mismatch": rec.get("objective"), "status": rec.get("status"), "mse": ev_doc.get("mse") or {}}
    return Response(output=rec, stored_data=stored)


def _tag(j: Job, campaign: str, iteration: int, kind: str, **extra) -> Job:
    """Key numbers of a job in its metadata: jobflow copies them into the Firework spec as ``_aso``."""
    j.metadata["_aso"] = {"campaign": campaign, "iteration": int(iteration), "kind": kind, **extra}
    return j


# ---- jobs (thin wrappers; the logic lives in evaluate.py / learn.py) ---------------------------------
@job
def simulate_job(store: dict, campaign: str, pid: str, technique: str) -> dict:
    """Simulate one candidate with one technique."""
    return ev.simulate_technique(_state(store, campaign), pid, technique)


@job
def absorber_job(store: dict, campaign: str, pid: str, technique: str, site: int) -> dict:
    """One XAS absorber run (the finest fan-out unit)."""
    return ev.simulate_absorber(_state(store, campaign), pid, technique, site)


@job
def combine_job(store: dict, campaign: str, pid: str, technique: str, results: list[dict]) -> dict:
    """Average the absorber runs of one candidate."""
    return ev.combine_absorbers(_state(store, campaign), pid, technique, results)


@job
def evaluate_job(store: dict, campaign: str, pid: str) -> dict:
    """Simulate one candidate with every technique and record it, all in one job (no absorber fan-out)."""
    state = _state(store, campaign)
    results = {t: ev.simulate_technique(state, pid, t) for t in state.simulators}
    return _key_numbers(state, ev.record_evaluation(state, pid, results))


@job
def record_job(store: dict, campaign: str, pid: str, results: dict) -> dict:
    """Store the evaluation (spectra references + mismatch) of one candidate."""
    state = _state(store, campaign)
    return _key_numbers(state, ev.record_evaluation(state, pid, results))


@job
def train_job(store: dict, campaign: str, iteration: int, evaluations: list[dict]) -> dict:
    """Retrain the surrogate ensembles on everything evaluated so far (routed to the GPU worker)."""
    state = _state(store, campaign)
    from aso_workflows.optimizers import make_optimizer

    if not make_optimizer(state.config.optimizer, state.config).needs_surrogate:
        return {}
    return learn.train_models(state, iteration)


@job
def propose_job(
    store: dict, campaign: str, iteration: int, models: dict, evaluations: list[dict] | None = None
):
    """Propose the next candidates and append the next iteration, or end the campaign."""
    state = _state(store, campaign)
    ev.record_lost(state, iteration)  # candidates whose jobs never reported count as failed (lost_job)
    reason = learn.should_stop(state)
    if reason is not None:
        state.update(status="completed", stop_reason=reason)
        return Response(output={"stopped": reason, "iteration": iteration, "n_used": state.n_used()})
    if models is None:  # the training job was given up (lost): train here rather than stall
        from aso_workflows.optimizers import make_optimizer

        needs = make_optimizer(state.config.optimizer, state.config).needs_surrogate
        models = learn.train_models(state, iteration) if needs else {}
    pids = learn.propose_candidates(state, iteration + 1, models)
    state.update(iteration=iteration + 1)
    nxt = IterationMaker().make(store, campaign, iteration + 1, pids)
    return Response(output={"iteration": iteration + 1, "proposals": pids}, addition=nxt)


# ---- Makers ---------------------------------------------------------------------------------------
def _cand_name(campaign: str, pid: str) -> str:
    _, it, cand = pid.rsplit(":", 2)
    return f"{campaign} / it {int(it)} / cand {int(cand)}"


def _cand_tag(j: Job, campaign: str, pid: str, kind: str, technique: str, **extra) -> Job:
    _, it, cand = pid.rsplit(":", 2)
    return _tag(j, campaign, int(it), kind, candidate=int(cand), technique=technique, **extra)


@dataclass
class EvaluateCandidateMaker(Maker):
    """Evaluate one candidate with every target technique.

    XAS techniques fan out into one job per absorber site plus an averaging job; PDF is one job.
    """

    name: str = "evaluate"
    split_absorbers: bool = True

    def make(self, store: dict, campaign: str, pid: str) -> Flow:
        state = _state(store, campaign)
        base = _cand_name(campaign, pid)
        split = self.split_absorbers and any(
            isinstance(s, AbsorberSimulator) for s in state.simulators.values()
        )
        if not split:
            # one job simulates and records (PDF, or XAS without the per-absorber fan-out)
            j = evaluate_job(store, campaign, pid)
            j.name = f"{base} / {'+'.join(state.simulators)}"
            _cand_tag(j, campaign, pid, "evaluate", "+".join(state.simulators))
            return Flow([j], output=j.output, name=base)
        jobs: list[Job] = []
        results = {}
        for technique, sim in state.simulators.items():
            if isinstance(sim, AbsorberSimulator) and self.split_absorbers:
                site_jobs = []
                for site in ev.absorber_sites(state, pid, technique):
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
        _cand_tag(rec, campaign, pid, "record", "+".join(state.simulators))
        return Flow(jobs + [rec], output=rec.output, name=base)


@dataclass
class TrainMaker(Maker):
    """Retrain the surrogate ensembles; tagged ``_category: gpu`` so FireWorks routes it to GPU workers."""

    name: str = "train"
    manager_config: dict = field(default_factory=lambda: {"_category": "gpu"})

    def make(self, store: dict, campaign: str, iteration: int, evaluations: list) -> Job:
        j = _tolerate_lost_parents(train_job(store, campaign, iteration, evaluations))
        j.name = f"{campaign} / it {iteration} / train"
        _tag(j, campaign, iteration, "train")
        j.update_config({"manager_config": dict(self.manager_config)})
        return j


@dataclass
class ProposeMaker(Maker):
    """The dynamic job: proposes the next candidates and appends the next iteration."""

    name: str = "propose"

    def make(self, store: dict, campaign: str, iteration: int, models, evaluations: list) -> Job:
        j = _tolerate_lost_parents(propose_job(store, campaign, iteration, models, evaluations))
        j.name = f"{campaign} / it {iteration} / propose"
        _tag(j, campaign, iteration, "propose")
        return j


@dataclass
class IterationMaker(Maker):
    """One iteration: evaluate its candidates (fan-out), retrain, propose (dynamic)."""

    name: str = "iteration"
    evaluate: EvaluateCandidateMaker = field(default_factory=EvaluateCandidateMaker)
    train: TrainMaker = field(default_factory=TrainMaker)
    propose: ProposeMaker = field(default_factory=ProposeMaker)

    def make(self, store: dict, campaign: str, iteration: int, pids: list[str]) -> Flow:
        evals = [self.evaluate.make(store, campaign, pid) for pid in pids]
        outputs = [f.output for f in evals]
        tr = self.train.make(store, campaign, iteration, outputs)
        pr = self.propose.make(store, campaign, iteration, tr.output, outputs)
        return Flow(evals + [tr, pr], output=pr.output, name=f"{campaign} / iteration {iteration}")


@dataclass
class CampaignMaker(Maker):
    """The flow that starts — or resumes — a campaign from what the store holds.

    New campaign: targets and initial perturbations are stored, then iteration 0 evaluates them.
    Existing campaign: the latest iteration with stored proposals is rebuilt; evaluations, models and
    proposals already stored are reused, so nothing is simulated twice.
    """

    name: str = "campaign"
    iteration: IterationMaker = field(default_factory=IterationMaker)

    def make(self, config, workdir) -> Flow:
        db = get_db(config.store_spec())
        state = learn.init_campaign(config, db, workdir)
        store = db.spec.as_dict()
        it = max(state.last_iteration(), 0)
        if it > 0 and int(state.doc.get("iteration") or 0) < it:
            # the propose job died while storing this batch: fill in the missing candidates with the
            # models it used (stored ones keep their structure), then mark the batch complete
            learn.propose_candidates(state, it, learn.stored_model_ids(state, it - 1))
            state.update(iteration=it)
        pids = [p["_id"] for p in state.proposals(it)]
        flow = self.iteration.make(store, config.name, it, pids)
        flow.name = f"{config.name} (from iteration {it})"
        return flow
