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
    return ev.record_evaluation(state, pid, results)


@job
def record_job(store: dict, campaign: str, pid: str, results: dict) -> dict:
    """Store the evaluation (spectra references + mismatch) of one candidate."""
    return ev.record_evaluation(_state(store, campaign), pid, results)


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
    reason = learn.should_stop(state)
    if reason is not None:
        state.update(status="completed", stop_reason=reason)
        return Response(output={"stopped": reason, "iteration": iteration, "n_used": state.n_used()})
    pids = learn.propose_candidates(state, iteration + 1, models)
    state.update(iteration=iteration + 1)
    nxt = IterationMaker().make(store, campaign, iteration + 1, pids)
    return Response(output={"iteration": iteration + 1, "proposals": pids}, addition=nxt)


# ---- Makers ---------------------------------------------------------------------------------------
def _cand_name(campaign: str, pid: str) -> str:
    _, it, cand = pid.rsplit(":", 2)
    return f"{campaign} / it {int(it)} / cand {int(cand)}"


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
            return Flow([j], output=j.output, name=base)
        jobs: list[Job] = []
        results = {}
        for technique, sim in state.simulators.items():
            if isinstance(sim, AbsorberSimulator) and self.split_absorbers:
                site_jobs = []
                for site in ev.absorber_sites(state, pid, technique):
                    j = absorber_job(store, campaign, pid, technique, site)
                    j.name = f"{base} / {technique} / site {site}"
                    site_jobs.append(j)
                c = combine_job(store, campaign, pid, technique, [j.output for j in site_jobs])
                c.name = f"{base} / {technique} / average"
                jobs += site_jobs + [c]
                results[technique] = c.output
            else:
                j = simulate_job(store, campaign, pid, technique)
                j.name = f"{base} / {technique}"
                jobs.append(j)
                results[technique] = j.output
        rec = record_job(store, campaign, pid, results)
        rec.name = f"{base} / record"
        return Flow(jobs + [rec], output=rec.output, name=base)


@dataclass
class TrainMaker(Maker):
    """Retrain the surrogate ensembles; tagged ``_category: gpu`` so FireWorks routes it to GPU workers."""

    name: str = "train"
    manager_config: dict = field(default_factory=lambda: {"_category": "gpu"})

    def make(self, store: dict, campaign: str, iteration: int, evaluations: list) -> Job:
        j = train_job(store, campaign, iteration, evaluations)
        j.name = f"{campaign} / it {iteration} / train"
        j.update_config({"manager_config": dict(self.manager_config)})
        return j


@dataclass
class ProposeMaker(Maker):
    """The dynamic job: proposes the next candidates and appends the next iteration."""

    name: str = "propose"

    def make(self, store: dict, campaign: str, iteration: int, models, evaluations: list) -> Job:
        j = propose_job(store, campaign, iteration, models, evaluations)
        j.name = f"{campaign} / it {iteration} / propose"
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
        pids = [p["_id"] for p in state.proposals(it)]
        flow = self.iteration.make(store, config.name, it, pids)
        flow.name = f"{config.name} (from iteration {it})"
        return flow
