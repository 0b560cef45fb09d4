"""Query a campaign's results from Python: the same on the embedded store, MongoDB and mongomock.

Example
-------
>>> from aso_workflows.results import Campaign
>>> c = Campaign.open("linio2-jt-pdf")                       # runs/linio2-jt-pdf/store, or $ASO_STORE
>>> c = Campaign.open("linio2-jt-pdf", store="mongodb://user:pw@host/?authSource=admin")
>>> c = Campaign.from_config("examples/linio2_jt_pdf/campaign.yaml")
>>> c.summary().best_objective
>>> [(b.ref, b.objective) for b in c.best(5)]               # b.structure is a pymatgen Structure
>>> c.history()                                             # pandas DataFrame, one row per evaluation
>>> c.spectrum("best", "pdf")                               # Spectrum of the best candidate
>>> c.surrogate_accuracy()                                  # predicted vs simulated mismatch per iteration

A candidate is referred to (``Campaign.candidate``, ``spectrum``, ``aso results spectra --candidate``) as

- ``start`` — the start structure; ``best`` or ``best:N`` — the N-th best (1 = best);
- ``ITERATION:CANDIDATE`` — e.g. ``3:1``, the second candidate proposed in iteration 3 (what
  ``aso results best`` prints in its ``ref`` column);
- a full evaluation id (``campaign:fingerprint:settings``), proposal id (``campaign:0003:001``) or fingerprint.

Only ``find`` with simple filters and projections is used (montydb has no ``aggregate``), one query per
collection and call: a campaign of thousands of evaluations is read in a few queries, not one per row.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pymatgen.core import Structure

from aso_workflows.campaign.state import CampaignState, get_db
from aso_workflows.errors import InputError
from aso_workflows.schemas import EvaluationDoc
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.store import CampaignDB, StoreSpec, lease_state, redact_uri

if TYPE_CHECKING:
    import pandas as pd

    from aso_workflows.config import CampaignConfig

__all__ = ["Candidate", "CampaignSummary", "Campaign", "list_campaigns", "open_db"]

# Note: projections are built fresh for every query: a driver may add keys to a dict it is given (a shared
# one then mixed inclusion and exclusion on the next query). Every status but "completed" is a failure.
_REF_FORMS = "'start', 'best', 'best:N', 'ITERATION:CANDIDATE' (e.g. 2:0), an evaluation or proposal id"


def _iso(t: float | None) -> str | None:
    """Seconds since the epoch as an ISO time (UTC), None for None."""
    from datetime import datetime, timezone

    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def open_db(store: StoreSpec | dict | str | Path | None, database: str = "aso") -> CampaignDB:
    """The campaign store from a :class:`StoreSpec`, its dict, a URI / ``mongomock://NAME`` / folder."""
    from aso_workflows.locate import store_spec_from

    if isinstance(store, dict):
        store = StoreSpec.from_dict(store)
    if store is None:
        raise InputError("store", "give a mongodb:// URI, mongomock://NAME or an embedded store folder")
    spec = store if isinstance(store, StoreSpec) else store_spec_from(str(store), database)
    if spec.kind == "embedded" and (Path(spec.path or "") / "store" / "db").is_dir():
        spec = dataclasses.replace(
            spec, path=str(Path(spec.path or "") / "store")
        )  # the campaign's output folder
    if spec.kind == "embedded" and not (Path(spec.path or "") / "db").is_dir():
        # reading must not create an empty store (open_store would): the campaign has not run yet
        raise InputError("store", f"no campaign store at {spec.path} (has the campaign been run?)")
    return get_db(spec)


def list_campaigns(db: CampaignDB) -> list[dict]:
    """One row per campaign in the store: name, status, optimizer, simulations used / budget, best, updated.

    ``status`` is ``interrupted`` for a campaign stored as running that no controller drives (see
    :meth:`Campaign.controller`); ``controller`` says whether one does.
    """
    rows = []
    projection = {"config": 1, "status": 1, "n_used": 1, "budget": 1, "best_objective": 1, "updated": 1}
    projection["stop_reason"] = 1
    projection["executor"] = 1
    leases = {d["_id"]: d for d in db.leases.find({})}
    for d in db.campaigns.find({}, projection):
        cfg = d.get("config") or {}
        live = lease_state(leases.get(d["_id"])).live
        online = bool((d.get("executor") or {}).get("online"))
        status = d.get("status")
        rows.append(
            {
                "name": d["_id"],
                "status": "interrupted" if status == "running" and not live and not online else status,
                "controller": live,
                "optimizer": cfg.get("optimizer"),
                "n_used": d.get("n_used", 0),
                "budget": cfg.get("budget", d.get("budget")),
                "best_objective": d.get("best_objective"),
                "stop_reason": d.get("stop_reason", ""),
                "updated": d.get("updated"),
            }
        )
    return sorted(rows, key=lambda r: r["name"])


@dataclass
class Candidate:
    """One evaluated candidate structure.

    Attributes
    ----------
    id
        Evaluation id (``campaign:fingerprint:settings``).
    ref
        Short reference ``ITERATION:CANDIDATE`` accepted by :meth:`Campaign.candidate`.
    rank
        Position by objective among completed evaluations (1 = best), when known.
    predicted_objective
        The surrogate's predicted mismatch when the candidate was proposed (``aso`` optimizer only).
    goodness
        Rw (PDF) / R (XAS) per technique: ``{"pdf": {"name": "Rw", "value": 0.32}}``.
    fit
        Fitted nuisance parameters per technique (targets with a ``fit``), e.g. ``{"pdf": {"scale": 0.77}}``.
    """

    id: str
    proposal_id: str
    iteration: int
    candidate: int
    kind: str
    status: str
    objective: float | None
    mse: dict[str, float]
    fingerprint: str
    structure: Structure
    spectra: dict[str, str] = field(default_factory=dict)
    error: str = ""
    rank: int | None = None
    predicted_objective: float | None = None
    goodness: dict[str, dict] = field(default_factory=dict)
    fit: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.iteration}:{self.candidate}"

    @classmethod
    def from_doc(
        cls, doc: EvaluationDoc | dict, rank: int | None = None, predicted: float | None = None
    ) -> Candidate:
        """From an evaluation document (with its structure)."""
        e = doc if isinstance(doc, EvaluationDoc) else EvaluationDoc.from_mongo(doc)
        if e.structure is None:
            raise InputError("candidate", f"evaluation {e.id!r} was read without its structure")
        return cls(
            id=e.id,
            proposal_id=e.proposal_id,
            iteration=e.iteration,
            candidate=e.candidate,
            kind=e.kind,
            status=e.status,
            objective=e.objective,
            mse=dict(e.mse),
            fingerprint=e.fingerprint,
            structure=e.structure.to_pymatgen(),
            spectra=dict(e.spectra),
            error=e.error or "",
            rank=rank,
            predicted_objective=predicted,
            goodness={t: g.model_dump() for t, g in e.goodness.items()},
            fit={t: dict(f.parameters) for t, f in e.fit.items()},
        )

    def to_dict(self, structure: bool = False) -> dict:
        """JSON-able form; the structure (pymatgen dict) only when asked, plus formula and size."""
        d = asdict(self)
        d.pop("structure")
        d["ref"] = self.ref
        d["formula"] = self.structure.composition.reduced_formula
        d["n_atoms"] = len(self.structure)
        if structure:
            d["structure"] = self.structure.as_dict()
        return d


@dataclass
class CampaignSummary:
    """What ``aso status CAMPAIGN`` shows.

    ``failures`` lists every evaluation whose status is not ``completed`` with its reason and
    ``failure_kind`` (counted in ``failures_by_kind``: simulator_error, walltime, nonphysical_geometry,
    input_error, lost_job; ``unspecified`` for records without one); ``pending`` the
    proposals not evaluated yet (running or queued jobs, or lost ones when the campaign is not running);
    ``completed_by_kind`` the completed simulations per kind (``start``, ``initial``, the optimiser's
    name, ``fallback``: random perturbations simulated because the optimiser found nothing valid).

    ``status`` is what the campaign is doing now: the stored status (``stored_status``: running,
    completed, interrupted), except that a campaign stored as ``running`` whose controller is gone
    (killed, stopped at its timeout, host lost) is ``interrupted``. ``controller`` says who drives it
    (:meth:`Campaign.controller`: ``running``, ``pid``, ``host``, ``since``, ``reason``, ``resume``, the
    command that continues it) and ``slurm_jobs`` lists its Slurm jobs still queued or running, with
    Slurm's reason for those that wait (:meth:`Campaign.slurm_jobs`; None when not on Slurm).
    """

    name: str
    status: str
    stop_reason: str
    store: str
    optimizer: str
    iteration: int
    n_used: int
    budget: int
    n_failed: int
    failures_by_kind: dict[str, int]
    best_objective: float | None
    best_ref: str | None
    start_objective: float | None
    n_models: int
    updated: str | None
    failures: list[dict] = field(default_factory=list)
    pending: list[dict] = field(default_factory=list)
    best_goodness: dict[str, dict] = field(default_factory=dict)
    start_goodness: dict[str, dict] = field(default_factory=dict)
    completed_by_kind: dict[str, int] = field(default_factory=dict)
    stored_status: str = ""
    controller: dict = field(default_factory=dict)
    slurm_jobs: list[dict] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Campaign:
    """A stored campaign, read-only. Open it with :meth:`open` or :meth:`from_config`."""

    state: CampaignState

    # ---- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, name: str, store: StoreSpec | dict | str | Path | None = None, database: str = "aso"
    ) -> Campaign:
        """Open campaign ``name`` in ``store``: a :class:`StoreSpec`, a ``mongodb://`` URI,
        ``mongomock://NAME``, an embedded store folder, or ``None`` for ``$ASO_STORE`` / ``runs/<name>/store``.

        Raises
        ------
        InputError
            No such store or no such campaign in it (the message lists the campaigns there).
        """
        if store is None or isinstance(store, (str, Path)):
            from aso_workflows.locate import resolve_campaign

            ref = resolve_campaign(name, None if store is None else str(store), database)
            return cls._load(open_db(ref.spec), ref.name)
        return cls._load(open_db(store, database), name)

    @classmethod
    def from_config(
        cls, config: CampaignConfig | str | Path, store: StoreSpec | str | None = None
    ) -> Campaign:
        """Open the campaign of a campaign YAML file (or a loaded :class:`CampaignConfig`)."""
        from aso_workflows.config import CampaignConfig, load_config

        cfg = config if isinstance(config, CampaignConfig) else load_config(config)
        return cls._load(open_db(store if store is not None else cfg.store_spec()), cfg.name)

    @classmethod
    def _load(cls, db: CampaignDB, name: str) -> Campaign:
        if db.campaigns.find_one({"_id": name}, {"_id": 1}) is None:
            names = [r["name"] for r in list_campaigns(db)]
            have = f"; campaigns there: {', '.join(names)}" if names else "; the store holds no campaign"
            raise InputError("CAMPAIGN", f"no campaign named {name!r} in {db.spec.redacted()}{have}")
        return cls(CampaignState.load(db, name))

    # ---- basic properties ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.state.name

    @property
    def db(self) -> CampaignDB:
        return self.state.db

    @property
    def config(self) -> CampaignConfig:
        return self.state.config

    @property
    def techniques(self) -> list[str]:
        return list(self.state.targets)

    def refresh(self) -> Campaign:
        """Re-read the campaign document (for a campaign still running)."""
        self.state = CampaignState.load(self.db, self.name)
        self.__dict__.pop("_predicted", None)
        return self

    # ---- documents (one query each) ---------------------------------------------------------------------
    def _evaluations(self, status: str | None = None, structure: bool = True) -> list[EvaluationDoc]:
        return self.state.evaluation_docs(status, structure=structure)

    @functools.cached_property
    def _predicted(self) -> dict[str, float]:
        """Predicted objective per proposal id (one query)."""
        out = {}
        for p in self.state.proposal_docs():
            value = (p.predicted or {}).get("objective")
            if value is not None:
                out[p.id] = float(value)
        return out

    # ---- the API ---------------------------------------------------------------------------------------
    def best(self, n: int = 5) -> list[Candidate]:
        """The ``n`` completed candidates with the lowest objective, best first (``rank`` 1, 2, ...)."""
        if n < 1:
            raise InputError("n", f"expected a positive number of structures, got {n}")
        docs = sorted(self._evaluations("completed"), key=EvaluationDoc.rank_key)[:n]
        pred = self._predicted
        return [
            Candidate.from_doc(d, rank=i + 1, predicted=pred.get(d.proposal_id)) for i, d in enumerate(docs)
        ]

    def structures(self, iteration: int | None = None, status: str | None = "completed") -> list[Candidate]:
        """Evaluated candidates (all iterations, or one), in evaluation order; ``status=None`` for all."""
        docs = self._evaluations(status)
        if iteration is not None:
            docs = [d for d in docs if d.iteration == iteration]
        pred = self._predicted
        return [Candidate.from_doc(d, predicted=pred.get(d.proposal_id)) for d in docs]

    def history(self) -> pd.DataFrame:
        """One row per evaluation in order (pandas DataFrame): see :func:`aso_workflows.report.history_rows`."""
        import pandas as pd

        from aso_workflows.report import HISTORY_COLUMNS, history_rows

        rows = history_rows(self.state)
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame(columns=list(HISTORY_COLUMNS))
        return df

    def surrogate_accuracy(self) -> pd.DataFrame:
        """Predicted vs simulated mismatch per iteration, with the surrogate's own training metrics.

        Candidates of iteration *k* were proposed with the ensembles trained after iteration *k − 1*; the
        row of iteration *k* compares their predicted objective with the simulated one and shows those
        ensembles' metrics (``heldout_mae_<technique>``, ``coverage_<technique>``, ``n_train``).
        Empty for optimizers without a surrogate.
        """
        import pandas as pd

        from aso_workflows.report import surrogate_accuracy_rows

        return pd.DataFrame(surrogate_accuracy_rows(self.state))

    def candidate(self, ref: Candidate | str) -> Candidate:
        """The candidate named by ``ref`` (see the module docstring for the accepted forms)."""
        return Candidate.from_doc(self._resolve(ref))

    def _resolve(self, ref: Candidate | str) -> EvaluationDoc:
        if isinstance(ref, Candidate):
            ref = ref.id
        text = str(ref).strip()
        ev = self.db.evaluations
        q: dict = {"campaign": self.name}
        doc = None
        m_best = re.fullmatch(r"best(?::(\d+))?", text)
        m_ic = re.fullmatch(r"(\d+):(\d+)", text)
        if text == "start":
            doc = ev.find_one({**q, "kind": "start"})
        elif m_best:
            k = int(m_best.group(1) or 1)
            ranked = sorted(self._evaluations("completed", structure=False), key=EvaluationDoc.rank_key)
            if 1 <= k <= len(ranked):
                doc = ev.find_one({"_id": ranked[k - 1].id})
        elif m_ic:
            it, cand = int(m_ic.group(1)), int(m_ic.group(2))
            doc = ev.find_one({**q, "iteration": it, "candidate": cand})
            if doc is None:  # a re-proposed structure already evaluated earlier shares that evaluation
                from aso_workflows.campaign.state import proposal_id

                doc = self._from_proposal(proposal_id(self.name, it, cand))
        else:
            doc = ev.find_one({"_id": text}) or self._from_proposal(text)
            if doc is None:
                doc = ev.find_one({**q, "fingerprint": text})
        if doc is None or doc.get("campaign") != self.name:
            raise InputError(
                "candidate", f"no evaluated candidate {text!r} in campaign {self.name!r}; use {_REF_FORMS}"
            )
        return EvaluationDoc.from_mongo(doc)

    def _from_proposal(self, pid: str) -> dict | None:
        prop = self.db.proposals.find_one({"_id": pid}, {"evaluation_id": 1, "campaign": 1})
        if prop is None or not prop.get("evaluation_id"):
            return None
        return self.db.evaluations.find_one({"_id": prop["evaluation_id"]})

    def spectra(self, candidate: Candidate | str) -> dict[str, Spectrum]:
        """Simulated spectra of a candidate, by technique."""
        doc = self._resolve(candidate)
        if doc.status != "completed":
            raise InputError(
                "candidate",
                f"candidate {doc.iteration}:{doc.candidate} has no spectra ({doc.status}: {doc.error or ''})",
            )
        out = {}
        for technique, cid in doc.spectra.items():
            try:
                out[technique] = self.state.spectrum(cid)
            except KeyError:
                raise InputError(
                    "candidate", f"spectrum {cid!r} is missing from the spectra collection"
                ) from None
        return out

    def pdf_fit(self, candidate: Candidate | str = "best") -> dict:
        """A candidate's PDF fit as PDF users read it: data, model, difference, fit range, Rw, refined
        parameters with uncertainties and bounds, its bonds beside the start's
        (:func:`~aso_workflows.report.pdf_fit.pdf_fit_view`).

        Raises
        ------
        InputError
            The campaign has no PDF target, or the candidate no fitted PDF.
        """
        from aso_workflows.report.pdf_fit import pdf_fit_view

        doc = self._resolve(candidate)
        view = pdf_fit_view(self.state, doc) if doc.status == "completed" else None
        if view is None:
            raise InputError("candidate", f"candidate {doc.iteration}:{doc.candidate} has no PDF fit")
        return view

    def spectrum(self, candidate: Candidate | str, technique: str | None = None) -> Spectrum:
        """One simulated spectrum of a candidate; ``technique`` may be left out when the campaign has one."""
        technique = self._technique(technique)
        return self.spectra(candidate)[technique]

    def target(self, technique: str | None = None) -> Spectrum:
        """The campaign's target spectrum for ``technique``."""
        return self.state.targets[self._technique(technique)]

    def _technique(self, technique: str | None) -> str:
        techs = self.techniques
        if technique is None:
            if len(techs) == 1:
                return techs[0]
            raise InputError(
                "technique", f"campaign {self.name!r} has several techniques, choose one of {techs}"
            )
        technique = technique.strip().lower()
        if technique not in techs:
            raise InputError(
                "technique", f"campaign {self.name!r} has no {technique!r} target (it has {techs})"
            )
        return technique

    def failures(self) -> list[dict]:
        """Evaluations that did not complete, with their reasons (``ref``, ``status``, ``error``, ...)."""
        out = []
        for d in self._evaluations(structure=False):
            if d.status == "completed":
                continue
            prov = [p for p in d.provenance.values() if p is not None]
            hosts = sorted({p.host for p in prov if p.host})
            jobs = sorted({p.slurm_job_id for p in prov if p.slurm_job_id})
            out.append(
                {
                    "ref": f"{d.iteration}:{d.candidate}",
                    "id": d.id,
                    "iteration": d.iteration,
                    "candidate": d.candidate,
                    "status": d.status,
                    "failure_kind": d.failure_kind or "unspecified",
                    "error": d.error or "",
                    "host": ", ".join(hosts),
                    "slurm_job_id": ", ".join(jobs),
                    "created": d.created,
                }
            )
        return out

    def pending(self) -> list[dict]:
        """Proposals not evaluated yet: queued or running jobs (or lost ones when nothing runs)."""
        # by fingerprint: a proposal of a structure evaluated before shares that evaluation
        evaluated = {
            d.get("fingerprint")
            for d in self.db.evaluations.find({"campaign": self.name}, {"fingerprint": 1})
        }
        return [
            {
                "ref": f"{p.iteration}:{p.candidate}",
                "id": p.id,
                "iteration": p.iteration,
                "candidate": p.candidate,
                "kind": p.kind,
                "created": p.created,
            }
            for p in self.state.proposal_docs()
            if p.fingerprint not in evaluated and p.status is None
        ]

    def controller(self) -> dict:
        """Whether a controller process drives the campaign now, from its lease in the store.

        Returns
        -------
        dict
            ``running`` (bool), ``reason`` (one line), ``holder``, ``host``, ``pid``, ``since`` (when it
            took the lease), ``renewed``, ``expires`` (ISO times, UTC; None without a lease),
            ``executor`` (``local``, ``slurm``, ``online``: how the campaign runs) and ``resume``: the
            command that continues the campaign when it is stored as running but nobody drives it
            (None otherwise). Campaigns added for online workers (``aso submit --no-wait``) have no
            controller: their workers drive them.
        """
        lease = self.db.controller(self.name)
        executor = dict(self.state.doc.get("executor") or {})
        kind = "online" if executor.get("online") else str(executor.get("kind") or "local")
        reason = lease.reason
        if not lease.live and kind == "online":
            reason = "no controller: online workers (qlaunch rapidfire) run it; see aso status --launchpad"
        orphaned = not lease.live and kind != "online" and self.state.doc.get("status") == "running"
        return {
            "running": lease.live,
            "reason": reason,
            "holder": lease.holder,
            "host": lease.host,
            "pid": lease.pid,
            "since": _iso(lease.acquired),
            "renewed": _iso(lease.renewed),
            "expires": _iso(lease.expires),
            "executor": kind,
            "resume": self.resume_command() if orphaned else None,
        }

    def resume_command(self) -> str:
        """``aso resume NAME --store STORE``: the command that continues this campaign (docs/reliability.md)."""
        import shlex

        spec = self.db.spec
        if spec.kind == "embedded":
            where = str(spec.path)
        elif spec.kind == "mongodb":
            where = redact_uri(spec.uri or "")
        else:
            where = spec.uri or f"mongomock://{spec.database}"
        cmd = f"aso resume {shlex.quote(self.name)} --store {shlex.quote(where)}"
        if spec.database != "aso":
            cmd += f" --database {shlex.quote(spec.database)}"
        return cmd

    def slurm_jobs(self, env: dict[str, str] | None = None) -> list[dict] | None:
        """The campaign's Slurm jobs still queued or running, with Slurm's reason for those that wait.

        Found with ``squeue`` by their working directory, which is in the campaign's launch directory
        (``executor.launch_dir`` of the campaign document); see
        :func:`aso_workflows.cluster.slurm.jobs_in` for the fields. A job whose reason waiting does not
        cure (``PartitionConfig``: the queue file asks for more CPUs, memory or GPUs than the partition's
        nodes have) has ``blocked`` True.

        Returns
        -------
        list of dict or None
            None when the campaign does not run on Slurm, or ``squeue`` is not available here.
        """
        executor = self.state.doc.get("executor") or {}
        if executor.get("kind") != "slurm" or not executor.get("launch_dir"):
            return None
        from aso_workflows.cluster.slurm import jobs_in

        return jobs_in(executor["launch_dir"], env=env)

    def summary(self) -> CampaignSummary:
        """Iteration, simulations used / budget, best and start mismatch, failures, pending candidates."""
        self.refresh()
        doc = self.state.doc
        evals = self._evaluations(structure=False)
        done = [d for d in evals if d.status == "completed"]
        best = min(done, key=EvaluationDoc.rank_key) if done else None
        start = next((d for d in done if d.kind == "start"), None)
        proposals = self.state.proposal_docs()
        failures = self.failures()
        stored = str(doc.get("status", ""))
        controller = self.controller()
        return CampaignSummary(
            name=self.name,
            status="interrupted" if controller["resume"] else stored,
            stop_reason=str(doc.get("stop_reason", "") or ""),
            store=self.db.spec.redacted(),
            optimizer=self.config.optimizer,
            iteration=max((p.iteration for p in proposals), default=0),
            n_used=len(done),
            budget=self.config.budget,
            n_failed=len(failures),
            failures_by_kind=dict(Counter(f["failure_kind"] for f in failures).most_common()),
            best_objective=best.objective if best else None,
            best_ref=f"{best.iteration}:{best.candidate}" if best else None,
            start_objective=start.objective if start else None,
            best_goodness={t: g.model_dump() for t, g in best.goodness.items()} if best else {},
            start_goodness={t: g.model_dump() for t, g in start.goodness.items()} if start else {},
            n_models=self.db.models.count_documents({"campaign": self.name}),
            updated=doc.get("updated"),
            failures=failures,
            pending=self.pending(),
            completed_by_kind=dict(Counter(d.kind for d in done)),
            stored_status=stored,
            controller=controller,
            slurm_jobs=self.slurm_jobs(),
        )

    def write_report(self, out: str | Path, n_best: int = 5) -> dict[str, Path]:
        """Write the campaign report (HTML + PNGs), best CIFs and history CSV into ``out``."""
        from aso_workflows.report import write_outputs

        return write_outputs(self.state, out, n_best=n_best)
