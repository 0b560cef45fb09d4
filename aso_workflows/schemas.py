"""The documents a campaign stores, and the outputs of its jobs, as pydantic models.

One model per kind of document (as atomate2's task documents), used

- when writing the store: every document is built as a model and written with :meth:`StoredDoc.to_mongo`,
  so a field that is misspelt, of the wrong type, or a numpy value never reaches the database;
- as the output schemas of the campaign's jobflow jobs (:class:`SimulationResult`, :class:`RecordResult`,
  :class:`ProposeResult`);
- when reading, in :mod:`aso_workflows.results` and :mod:`aso_workflows.report`
  (``EvaluationDoc.from_mongo(doc)``).

``docs/results.md`` describes the same fields; ``tests/test_schemas.py`` checks that the two agree.

Collections: ``campaigns`` (:class:`CampaignDoc`), ``proposals`` (:class:`ProposalDoc`), ``evaluations``
(:class:`EvaluationDoc`), ``spectra`` (:class:`SpectrumDoc`), ``models`` (:class:`ModelDoc`),
``job_errors`` (:class:`JobErrorDoc`) and ``leases`` (:class:`LeaseDoc`).
"""

from __future__ import annotations

import datetime as _dt
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from typing_extensions import Self

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "FAILURE_KINDS",
    "FailureKind",
    "Provenance",
    "Grid",
    "SpectrumData",
    "SpeciesDoc",
    "SiteDoc",
    "LatticeDoc",
    "StructureDoc",
    "StoredDoc",
    "CampaignDoc",
    "ProposalDoc",
    "EvaluationDoc",
    "Goodness",
    "FitDoc",
    "SpectrumDoc",
    "ModelDoc",
    "JobErrorDoc",
    "LeaseDoc",
    "SimulationResult",
    "RecordResult",
    "ProposeResult",
    "now",
    "plain",
]

FAILURE_KINDS = (
    "simulator_error",  # the code failed (FEFF crashed, exited non-zero, wrote no/NaN output)
    "walltime",  # the run exceeded the campaign's simulation_timeout_s and was killed
    "nonphysical_geometry",  # atoms on top of each other, NaN coordinates, a collapsed cell: not run
    "input_error",  # the simulator refused the structure (e.g. no absorbing atom)
    "job_error",  # the job raised: a bug or an environment problem, not the simulation (traceback kept)
    "lost_job",  # the job never reported (Slurm job killed/preempted/node lost, reruns exhausted)
)
"""The ``failure_kind`` values of failed evaluations (``aso status`` groups failures by them)."""

FailureKind = Literal[
    "simulator_error", "walltime", "nonphysical_geometry", "input_error", "job_error", "lost_job"
]
Status = Literal["completed", "failed"]


def now() -> str:
    """The current time as an ISO 8601 UTC string (how every stored time is written)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays turned into Python numbers and lists, recursively.

    Free-form parts of documents (metrics, predicted spectra) are often built with numpy; BSON has no
    numpy types (pymongo refuses them, mongomock does not), so every document passes through here.
    """
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if type(obj).__module__ == "numpy":
        return obj.tolist() if hasattr(obj, "tolist") else obj.item()
    return obj


class _Doc(BaseModel):
    """Strict field names (a typo is an error), numbers as plain Python numbers."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _plain(cls, data: Any) -> Any:
        return plain(data) if isinstance(data, dict) else data


# ---- spectra and structures, as every document holds them ----------------------------------------------
class Grid(BaseModel):
    """The abscissa of a spectrum.

    Attributes
    ----------
    name
        ``"r"`` (PDF), ``"k"`` (EXAFS χ(k)), ``"e"`` (XANES energy relative to the edge) or ``"E"``.
    unit
        ``"Å"``, ``"Å^-1"`` or ``"eV"``.
    values
        Strictly increasing grid points.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    unit: str
    values: list[float]

    @field_validator("values")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        a = np.asarray(v, dtype=float)
        if a.ndim != 1 or len(a) < 2:
            raise ValueError("grid needs at least 2 points")
        if not np.all(np.isfinite(a)):
            raise ValueError("grid has NaN or infinite values")
        if np.any(np.diff(a) <= 0):
            raise ValueError("grid is not strictly increasing")
        return v

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=float)


class SpectrumData(BaseModel):
    """One spectrum on one grid, with provenance, as documents store it (a campaign's targets, the
    ``spectra`` cache). :class:`~aso_workflows.spectra.spectrum.Spectrum` is this document with its
    technique checked against the technique registry and numpy conveniences; its docstring describes
    the fields.
    """

    technique: str
    grid: Grid
    values: list[float]
    absorber: str | None = None
    edge: str | None = None
    absorber_sites: list[int] | None = None
    site_values: list[list[float]] | None = None
    settings: dict = Field(default_factory=dict)
    engine: str = ""
    source: str = "simulation"
    extra: dict = Field(default_factory=dict)

    @field_validator("values")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        if not np.all(np.isfinite(np.asarray(v, dtype=float))):
            raise ValueError("spectrum values contain NaN or infinite numbers")
        return v

    def model_post_init(self, __context: Any) -> None:  # noqa: D401 - pydantic hook
        if len(self.values) != len(self.grid.values):
            raise ValueError(
                f"spectrum has {len(self.values)} values but its grid has {len(self.grid.values)} points"
            )


class _AsWritten(BaseModel):
    """A document written by another library (pymatgen's ``as_dict``): the fields used here typed, any
    other key kept, and written back exactly as read (a field that was absent stays absent), so a stored
    structure is the same whether or not it passed through this model."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_serializer(mode="wrap")
    def _as_read(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name, info in type(self).model_fields.items():
            if name not in self.model_fields_set:
                data.pop(name, None)
                if info.alias:
                    data.pop(info.alias, None)
        return data


Number = int | float
"""A number kept as written (an integer occupancy stays an integer in the stored document)."""
Vector3 = list[Number]


class SpeciesDoc(_AsWritten):
    """One species of a site: element, oxidation state (when set), occupancy."""

    element: str
    oxidation_state: Number | None = None
    spin: Number | None = None
    occu: Number


class SiteDoc(_AsWritten):
    """One site of a structure: its species, fractional (``abc``) and Cartesian (``xyz``, Å) position."""

    species: list[SpeciesDoc] = Field(min_length=1)
    abc: Vector3 = Field(min_length=3, max_length=3)
    properties: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    xyz: Vector3 | None = Field(default=None, min_length=3, max_length=3)


class LatticeDoc(_AsWritten):
    """The cell: ``matrix`` rows are the lattice vectors (Å); pymatgen's derived lengths and angles kept."""

    matrix: list[Vector3] = Field(min_length=3, max_length=3)
    pbc: tuple[bool, bool, bool] = (True, True, True)


class StructureDoc(_AsWritten):
    """A crystal structure as stored: pymatgen's ``Structure.as_dict()``, typed
    (:meth:`from_pymatgen`, :meth:`to_pymatgen`)."""

    module: str = Field(default="pymatgen.core.structure", alias="@module")
    class_name: str = Field(default="Structure", alias="@class")
    charge: Number = 0.0
    lattice: LatticeDoc
    properties: dict[str, Any] = Field(default_factory=dict)
    sites: list[SiteDoc] = Field(min_length=1)

    @classmethod
    def from_pymatgen(cls, structure: Structure) -> StructureDoc:
        return cls.model_validate(plain(structure.as_dict()))

    def to_pymatgen(self) -> Structure:
        from pymatgen.core import Structure

        return Structure.from_dict(self.model_dump(mode="json", by_alias=True))


class StoredDoc(_Doc):
    """A document of a store collection; ``id`` is its ``_id``."""

    id: str = Field(alias="_id")

    def to_mongo(self) -> dict[str, Any]:
        """The document to write: JSON types only (never a numpy value), ``_id`` as the key."""
        return self.model_dump(mode="json", by_alias=True)

    def to_mongo_fields(self) -> dict[str, Any]:
        """:meth:`to_mongo` without ``_id`` (for ``$setOnInsert``/``$set`` of a keyed upsert)."""
        doc = self.to_mongo()
        doc.pop("_id")
        return doc

    @classmethod
    def set_fields(cls, **fields: Any) -> dict[str, Any]:
        """The ``$set`` part of a partial update of these fields, each validated as this model's field
        (a misspelt name or a wrong type is an error, as when the whole document is built) and written
        as :meth:`to_mongo` writes it."""
        doc = cls.model_construct()
        for name, value in fields.items():
            cls.__pydantic_validator__.validate_assignment(doc, name, value)
        return doc.model_dump(mode="json", by_alias=True, include=set(fields))

    @classmethod
    def set_embedded(cls, path: str, part: BaseModel) -> dict[str, Any]:
        """The ``$set`` of a partial update inside an embedded document: each field given to ``part``
        (a model of the embedded document, so validated as when the whole document is built) at
        ``path.<field>``, written as :meth:`to_mongo` writes it.

        ``path`` is one of this model's fields that holds ``part``'s model, followed by the key for a
        mapping field: ``EvaluationDoc.set_embedded("provenance.pdf", Provenance(fw_id=7))`` gives
        ``{"provenance.pdf.fw_id": 7}``, ``ModelDoc.set_embedded("provenance", ...)`` the field itself.
        """
        name, _, key = path.partition(".")
        info = cls.model_fields.get(name)
        if info is None or not _holds(info.annotation, type(part)):
            raise ValueError(f"{cls.__name__}.{name} holds no {type(part).__name__}")
        if bool(key) != (get_origin(info.annotation) is dict) or "." in key:
            raise ValueError(f"{cls.__name__}.{path}: give the field, and a key only for a mapping field")
        values = part.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return {f"{path}.{field}": value for field, value in values.items()}

    @classmethod
    def from_mongo(cls, doc: dict[str, Any]) -> Self:
        """Validate a document read from the store (projections may leave fields out: they default)."""
        return cls.model_validate(doc)


def _holds(annotation: Any, model: type) -> bool:
    """Whether a field's type annotation is ``model`` or holds it (``X | None``, ``dict[str, X]`` ...)."""
    return annotation is model or any(_holds(a, model) for a in get_args(annotation))


_CONTROLLER_FIELDS = ("fw_id", "slurm_node")
"""The fields of :class:`Provenance` the Slurm controller adds afterwards (never written unset)."""


class Provenance(_Doc):
    """Where and how a job ran.

    ``fw_id`` and ``slurm_node`` are added afterwards by the Slurm controller, which knows the Firework
    each Slurm job ran (``cluster/runner.py: annotate_fireworks``); a provenance is written without them
    until then.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)  # other executors' ids are kept

    host: str | None = None
    pid: int | None = None
    slurm_job_id: str | None = None
    slurm_partition: str | None = None
    job_uuid: str | None = None
    finished: str | None = None
    wall_time_s: float | None = None
    absorber_jobs: list[dict[str, Any]] | None = None
    absorbers_failed: list[dict[str, Any]] | None = None
    fw_id: int | None = None
    slurm_node: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset_controller_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in _CONTROLLER_FIELDS:
            if name not in self.model_fields_set:
                data.pop(name, None)
        return data


class CampaignDoc(StoredDoc):
    """``campaigns``: one per campaign; ``_id`` is the campaign name."""

    config: dict[str, Any]
    status: Literal["running", "completed", "interrupted"] = "running"
    stop_reason: str | None = None
    budget: int
    n_used: int = 0
    n_failed: int = 0
    best_objective: float | None = None
    iteration: int = 0
    start_structure: StructureDoc
    start_fingerprint: str
    target_structure: StructureDoc | None = None
    targets: dict[str, SpectrumData]
    absorber_sites: dict[str, list[int]] = Field(default_factory=dict)
    workdir: str
    store: str
    executor: dict[str, Any] | None = None
    failed_jobs: int | None = None
    created: str = Field(default_factory=now)
    updated: str = Field(default_factory=now)


class ProposalDoc(StoredDoc):
    """``proposals``: one per (campaign, iteration, candidate); ``_id`` is ``campaign:IIII:CCC``."""

    campaign: str
    iteration: int
    candidate: int
    kind: str
    structure: StructureDoc | None = None  # left out by projections that skip it
    fingerprint: str
    predicted: dict[str, Any] | None = None
    acquisition: float | None = None
    seconds: float | None = None
    note: str = ""
    created: str = Field(default_factory=now)
    status: Status | None = None  # set once evaluated (None: pending)
    evaluation_id: str | None = None


class Goodness(_Doc):
    """The goodness of fit the field quotes for one technique: ``Rw`` (PDF, PDFgui's) or ``R`` (XAS,
    FEFFIT's R-factor); :mod:`aso_workflows.spectra.goodness`."""

    name: str
    value: float


class FitDoc(_Doc):
    """One technique's nuisance fit of a candidate (:class:`~aso_workflows.spectra.fit.base.FitResult`
    without its spectrum)."""

    technique: str
    parameters: dict[str, float] = Field(default_factory=dict)
    uncertainties: dict[str, float] = Field(default_factory=dict)
    statistics: dict[str, float] = Field(default_factory=dict)
    goodness_name: str
    goodness: float
    mse: float
    n_simulations: int = 0
    status: str
    bounds: dict[str, list[float]] = Field(default_factory=dict)
    at_bound: list[str] = Field(default_factory=list)
    structure: StructureDoc | None = None  # the candidate with its refined cell / per-site ADPs


class EvaluationDoc(StoredDoc):
    """``evaluations``: one per evaluated structure; ``_id`` is ``campaign:fingerprint:settings_key``.

    ``spectra`` are the spectra the surrogate learns: for a target with a ``fit``, the candidate's
    simulation with its nuisance fit applied (``fit`` holds the fitted values), else the simulation
    itself; ``simulated_spectra`` the simulations. ``mse`` and ``objective`` are of the fitted spectra;
    ``goodness`` is Rw/R per technique.
    """

    campaign: str
    iteration: int
    candidate: int
    proposal_id: str
    kind: str
    status: Status
    objective: float | None = None
    mse: dict[str, float] = Field(default_factory=dict)
    goodness: dict[str, Goodness] = Field(default_factory=dict)
    fit: dict[str, FitDoc] = Field(default_factory=dict)
    spectra: dict[str, str] = Field(default_factory=dict)
    simulated_spectra: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    failure_kind: FailureKind | None = None
    traceback: str | None = None
    absorbers_failed: dict[str, list[int]] | None = None
    structure: StructureDoc | None = None  # left out by projections that skip it
    fingerprint: str
    settings_key: str
    provenance: dict[str, Provenance | None] = Field(default_factory=dict)
    created: str = Field(default_factory=now)

    def pmg_structure(self) -> Structure:
        """The candidate as a pymatgen ``Structure`` (the document must have been read with it)."""
        if self.structure is None:
            raise ValueError(f"evaluation {self.id!r} was read without its structure")
        return self.structure.to_pymatgen()

    def rank_key(self) -> float:
        """Objective for sorting (failed evaluations last)."""
        return self.objective if self.objective is not None else float("inf")

    @field_validator("objective")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and v != v:  # NaN
            raise ValueError("the objective of an evaluation must be a number (NaN given)")
        return v


class SpectrumDoc(StoredDoc):
    """``spectra``: the cache of simulated spectra; ``_id`` is ``fingerprint:technique:settings_hash``
    (``:siteN`` for one absorber of an XAS spectrum). ``spectrum`` is a
    :class:`~aso_workflows.spectra.spectrum.Spectrum` document."""

    fingerprint: str
    technique: str
    spectrum: SpectrumData
    provenance: Provenance | None = None
    feff_paths: list[dict[str, Any]] | None = None
    """EXAFS with ``keep_paths``: the spectrum's FEFF scattering paths (its ``extra["feff_paths"]``), kept in
    the blob store (:data:`~aso_workflows.store.BLOB_FIELDS`)."""


class ModelDoc(StoredDoc):
    """``models``: one surrogate ensemble per (campaign, iteration, technique); ``_id`` is
    ``campaign:IIII:technique``; the weights are in the blob store (files or GridFS)."""

    campaign: str
    iteration: int
    technique: str
    status: Literal["completed"] = "completed"
    n_train: int
    metrics: dict[str, Any]
    weights: str
    device: str
    cuda: bool
    warnings: list[str] = Field(default_factory=list)
    seconds: float
    provenance: Provenance | None = None
    created: str = Field(default_factory=now)


class JobErrorDoc(StoredDoc):
    """``job_errors``: the traceback of a job that raised (a bug or a broken environment, not a failed
    simulation); ``_id`` is ``campaign|where|key`` (``where``: the proposal id, or ``iteration N``)."""

    campaign: str
    where: str
    key: str
    iteration: int | None = None
    error: str
    traceback: str
    job_uuid: str | None = None
    host: str | None = None
    created: str = Field(default_factory=now)


class LeaseDoc(StoredDoc):
    """``leases``: the controller that drives a campaign now; ``_id`` is the campaign name. Times are
    seconds since the epoch (compared across hosts: keep their clocks in sync)."""

    holder: str
    acquired: float
    renewed: float
    expires: float


# ---- job outputs ----------------------------------------------------------------------------------------
class SimulationResult(_Doc):
    """Output of a simulation job (one technique of one candidate, or one XAS absorber run).

    Failures are outputs, not exceptions: ``status`` ``failed`` with a one-line ``error`` and its
    ``failure_kind``, so one bad candidate never stops an iteration.
    """

    status: Status
    cache_id: str | None = None
    cached: bool = False
    site: int | None = None
    error: str | None = None
    failure_kind: FailureKind | None = None
    traceback: str | None = None
    absorbers_failed: list[int] | None = None
    provenance: Provenance | None = None

    @classmethod
    def lost(cls, what: str = "simulation job") -> SimulationResult:
        """The result of a job that never reported (its output reference resolved to nothing)."""
        return cls(
            status="failed",
            failure_kind="lost_job",
            error=f"{what} did not report (Slurm job lost and reruns exhausted, or never run)",
        )


class RecordResult(_Doc):
    """Output of a record job: the stored evaluation's id, status and objective."""

    evaluation_id: str
    status: Status
    objective: float | None = None


class ProposeResult(_Doc):
    """Output of a propose job: the next iteration and its proposals, or why the campaign stopped."""

    iteration: int
    proposals: list[str] = Field(default_factory=list)
    stopped: str | None = None
    n_used: int | None = None
