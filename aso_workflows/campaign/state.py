"""Reading and writing campaign state in the store (shared by the local and the cluster executors).

Every write is idempotent and keyed (``_id``), so a job that runs twice — a rerun after a crash, a lost
Slurm job run again — never duplicates an evaluation, a proposal or a model.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pymatgen.core import Structure

from aso_workflows.config import CampaignConfig
from aso_workflows.errors import InputError
from aso_workflows.schemas import CampaignDoc, EvaluationDoc, ModelDoc, ProposalDoc, StructureDoc, now
from aso_workflows.spectra.base import Simulator
from aso_workflows.spectra.spectrum import Spectrum
from aso_workflows.store import CampaignDB, StoreSpec, open_store
from aso_workflows.structures import (
    min_distance_table,
    pair_min_distance_matrix,
    settings_hash,
    structure_fingerprint,
)

if TYPE_CHECKING:
    from aso_workflows.spectra.mismatch import Objective

__all__ = ["CampaignState", "get_db", "now", "proposal_id", "evaluation_id"]


@functools.lru_cache(maxsize=8)
def _cached_db(spec_json: str) -> CampaignDB:
    return open_store(StoreSpec.from_dict(json.loads(spec_json)))


def get_db(spec: StoreSpec | dict) -> CampaignDB:
    """Open the store once per process (jobs of a local run share it)."""
    d = spec.as_dict() if isinstance(spec, StoreSpec) else dict(spec)
    return _cached_db(json.dumps(d, sort_keys=True))


def proposal_id(campaign: str, iteration: int, candidate: int) -> str:
    return f"{campaign}:{iteration:04d}:{candidate:03d}"


def evaluation_id(campaign: str, fingerprint: str, settings_key: str) -> str:
    return f"{campaign}:{fingerprint}:{settings_key}"


@dataclass
class CampaignState:
    """A campaign's configuration and targets as stored, with helpers the jobs share.

    Built from the ``campaigns`` document, so a job on another machine needs only the store spec and the
    campaign name.
    """

    db: CampaignDB
    name: str
    config: CampaignConfig
    doc: dict

    @classmethod
    def load(cls, db: CampaignDB, name: str) -> CampaignState:
        doc = db.campaigns.find_one({"_id": name})
        if doc is None:
            raise InputError("campaign", f"no campaign named {name!r} in {db.spec.redacted()}")
        config = CampaignConfig.model_validate(doc["config"])
        return cls(db=db, name=name, config=config, doc=doc)

    # ---- static parts -------------------------------------------------------------------------
    @functools.cached_property
    def start(self) -> Structure:
        return Structure.from_dict(self.doc["start_structure"])

    @functools.cached_property
    def species(self) -> list[str]:
        return [sp.symbol for sp in self.start.species]

    @functools.cached_property
    def simulators(self) -> dict[str, Simulator]:
        from aso_workflows.spectra.registry import make_simulator

        return {t.technique: make_simulator(t.technique, **t.settings) for t in self.config.targets}

    @functools.cached_property
    def targets(self) -> dict[str, Spectrum]:
        return {k: Spectrum.model_validate(v) for k, v in self.doc["targets"].items()}

    @functools.cached_property
    def settings_key(self) -> str:
        """Hash of every technique's simulator settings: part of the evaluation key."""
        return settings_hash({k: s.settings_dict() for k, s in sorted(self.simulators.items())})

    @functools.cached_property
    def objective(self) -> Objective:
        """The campaign's objective; a target with a ``fit`` carries its nuisance fitter."""
        from aso_workflows.spectra.fit import make_fitter
        from aso_workflows.spectra.mismatch import Objective, TechniqueTerm

        terms = []
        for t in self.config.targets:
            target = self.targets[t.technique]
            fitter = (
                make_fitter(t.technique, t.fit, target, self.simulators[t.technique], reference=self.start)
                if t.fit.active
                else None
            )
            terms.append(
                TechniqueTerm(
                    technique=t.technique,
                    target=target,
                    weight=t.weight,
                    normalisation=t.normalisation,
                    fitter=fitter,
                )
            )
        return Objective(terms)

    @functools.cached_property
    def fit_keys(self) -> dict[str, str]:
        """Per technique, a hash of its ``fit`` and its target: part of the id of a fitted spectrum."""
        return {
            t.technique: settings_hash(
                {"fit": t.fit.model_dump(mode="json"), "target": self.doc["targets"][t.technique]}
            )
            for t in self.config.targets
        }

    @functools.cached_property
    def min_distances(self) -> dict[tuple[str, str], float]:
        # defaults capped by the start's own shortest pair distances (a physical structure: see
        # structures.min_distance_table)
        return min_distance_table(
            self.species, self.config.min_distances, self.config.min_distance_scale, reference=self.start
        )

    @functools.cached_property
    def dmin_matrix(self) -> np.ndarray:
        return pair_min_distance_matrix(self.species, self.min_distances)

    @property
    def workdir(self) -> Path:
        return Path(self.doc.get("workdir") or ".")

    def absorber_sites(self, technique: str) -> list[int]:
        """The absorber sites of an XAS technique, fixed for the campaign when it was created (every
        candidate has the start's species in the start's order, so the same sites)."""
        return list((self.doc.get("absorber_sites") or {}).get(technique) or [])

    # ---- spectra --------------------------------------------------------------------------------
    def spectrum(self, cache_id: str) -> Spectrum:
        """A simulated spectrum from the ``spectra`` collection.

        Raises
        ------
        KeyError
            If no spectrum has that id.
        """
        doc = self.db.spectra.find_one({"_id": cache_id}, {"spectrum": 1, "feff_paths": 1})
        if doc is None:
            raise KeyError(cache_id)
        if doc.get("feff_paths") is not None:  # kept apart (blob store): back into the spectrum
            doc["spectrum"].setdefault("extra", {})["feff_paths"] = doc["feff_paths"]
        return Spectrum.model_validate(doc["spectrum"])

    def has_spectrum(self, cache_id: str) -> bool:
        return self.db.spectra.find_one({"_id": cache_id}, {"_id": 1}) is not None

    def check_engines(self, spectra: dict[str, Spectrum]) -> None:
        """Refuse spectra made by another code than the campaign's (its engine is fixed when it is created).

        Raises
        ------
        InputError
            Naming the technique, the spectrum's engine setting and the campaign's.
        """
        for technique, spectrum in spectra.items():
            want = self.simulators[technique].settings_dict().get("engine")
            got = (spectrum.settings or {}).get("engine")
            if want is not None and got is not None and got != want:
                raise InputError(
                    f"targets.{technique}.settings.engine",
                    f"a {technique} spectrum was made with engine {got!r}, the campaign uses {want!r}",
                )

    # ---- dynamic parts ------------------------------------------------------------------------
    def evaluations(self, status: str | None = "completed") -> list[dict]:
        """Evaluation documents in order of evaluation (iteration, candidate)."""
        query: dict = {"campaign": self.name}
        if status is not None:
            query["status"] = status
        docs = list(self.db.evaluations.find(query))
        return sorted(docs, key=lambda d: (d["iteration"], d["candidate"]))

    def evaluation_docs(self, status: str | None = None, structure: bool = False) -> list[EvaluationDoc]:
        """Evaluations as :class:`~aso_workflows.schemas.EvaluationDoc`, in order (one query; without
        their structures unless asked)."""
        query: dict = {"campaign": self.name}
        if status is not None:
            query["status"] = status
        docs = self.db.evaluations.find(query, None if structure else {"structure": 0})
        return sorted((EvaluationDoc.from_mongo(d) for d in docs), key=lambda d: (d.iteration, d.candidate))

    def proposal_docs(self) -> list[ProposalDoc]:
        """Proposals as :class:`~aso_workflows.schemas.ProposalDoc` without their structures and predicted
        spectra (only the predicted objective and λ), in order (one query)."""
        projection = {"structure": 0, **{f"predicted.{t}": 0 for t in self.targets}}
        docs = self.db.proposals.find({"campaign": self.name}, projection)
        return sorted((ProposalDoc.from_mongo(d) for d in docs), key=lambda d: (d.iteration, d.candidate))

    def model_docs(self) -> list[ModelDoc]:
        """The surrogate models' documents, by iteration and technique."""
        docs = self.db.models.find({"campaign": self.name})
        return sorted((ModelDoc.from_mongo(d) for d in docs), key=lambda d: (d.iteration, d.technique))

    def n_used(self) -> int:
        return len(self.evaluations("completed"))

    def best(self, n: int = 1) -> list[dict]:
        docs = self.evaluations("completed")
        return sorted(docs, key=lambda d: d["objective"])[:n]

    def proposals(self, iteration: int | None = None) -> list[dict]:
        query: dict = {"campaign": self.name}
        if iteration is not None:
            query["iteration"] = iteration
        docs = list(self.db.proposals.find(query))
        return sorted(docs, key=lambda d: (d["iteration"], d["candidate"]))

    def last_iteration(self) -> int:
        docs = self.proposals()
        return max((d["iteration"] for d in docs), default=-1)

    def consecutive_failures(self) -> int:
        docs = self.evaluations(status=None)
        n = 0
        for d in reversed(docs):
            if d["status"] != "failed":
                break
            n += 1
        return n

    def add_proposals(self, iteration: int, items: list[dict]) -> list[str]:
        """Store proposals of one iteration (idempotent); ``items`` have ``structure`` and extras."""
        ids = []
        for k, item in enumerate(items):
            s: Structure = item["structure"]
            pid = proposal_id(self.name, iteration, k)
            doc = ProposalDoc(
                _id=pid,
                campaign=self.name,
                iteration=iteration,
                candidate=k,
                kind=item.get("kind", "proposal"),
                structure=StructureDoc.from_pymatgen(s),
                fingerprint=structure_fingerprint(s),
                predicted=item.get("predicted"),
                acquisition=item.get("acquisition"),
                seconds=item.get("seconds"),
                note=item.get("note", ""),
            )
            self.db.proposals.update_one({"_id": pid}, {"$setOnInsert": doc.to_mongo_fields()}, upsert=True)
            ids.append(pid)
        return ids

    def proposal(self, pid: str) -> dict:
        doc = self.db.proposals.find_one({"_id": pid})
        if doc is None:
            raise InputError("proposal", f"no proposal {pid!r} in campaign {self.name!r}")
        return doc

    def update(self, **fields: Any) -> None:
        """Set fields of the campaign document (each checked as a :class:`CampaignDoc` field)."""
        update = CampaignDoc.set_fields(**fields, updated=now())
        self.db.campaigns.update_one({"_id": self.name}, {"$set": update})
