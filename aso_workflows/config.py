"""Campaign configuration: a YAML file validated onto the engine's dataclasses.

Example (``examples/linio2_jt_pdf/campaign.yaml``)::

    name: linio2-jt-pdf
    start: start.cif                 # relative to this file
    targets:
      - technique: pdf
        structure: target.cif        # or: file: measured.gr
        settings: {qmax: 18.0}
    budget: 60                       # simulations (structures evaluated), the initial ones included
    initial_size: 20
    batch_size: 4                    # q candidates per iteration
    surrogate: {n_models: 5, epochs: 300}
    proposal: {n_starts: 128, steps: 100}

Every section maps onto a dataclass of the engine (``SurrogateSettings``, ``PerturbationSampler``,
``GradientProposer``, ``LCBSchedule``); unknown or wrong fields give one line naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from aso_workflows.errors import InputError
from aso_workflows.optimizers.aso.acquisition import LCBSchedule
from aso_workflows.optimizers.aso.local import SurrogateRefine
from aso_workflows.optimizers.aso.proposal import GradientProposer
from aso_workflows.optimizers.polish import Polish
from aso_workflows.optimizers.registry import optimizer_class, optimizer_names, optimizer_sections
from aso_workflows.optimizers.sampling import PerturbationSampler
from aso_workflows.restraints import Restraints
from aso_workflows.spectra.fit.spec import FitSpec
from aso_workflows.spectra.techniques import get_technique, registered
from aso_workflows.spectra.xas_processing import XASProcessing
from aso_workflows.store.spec import StoreSpec, redact_uri
from aso_workflows.surrogate.settings import SurrogateSettings

if TYPE_CHECKING:
    from aso_workflows.spectra.base import Simulator
    from aso_workflows.spectra.spectrum import Spectrum

__all__ = ["TargetConfig", "StoreConfig", "CampaignConfig", "ConfigOverrides", "load_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class TargetConfig(_Strict):
    """One target spectrum of the campaign.

    Give exactly one of ``file`` (a measured/target spectrum: two-column text, FEFF ``xmu.dat``/``chi.dat``)
    or ``structure`` (a known target structure whose spectrum is simulated with the same settings — for
    benchmarks and demos, where success can be checked).
    """

    technique: str
    file: Path | None = None
    structure: Path | None = None
    weight: float = Field(default=1.0, gt=0)
    normalisation: Literal["variance", "none"] | float = "variance"
    settings: dict = Field(default_factory=dict)
    read_options: dict = Field(default_factory=dict)
    processing: XASProcessing | None = None
    fit: FitSpec = Field(default_factory=FitSpec)

    @property
    def source(self) -> Path:
        """The target's file: the spectrum file, or the structure whose spectrum is the target."""
        path = self.file if self.file is not None else self.structure
        assert path is not None  # _one_source guarantees one of them
        return path

    @field_validator("technique")
    @classmethod
    def _registered(cls, v: str) -> str:
        return registered(v)

    @model_validator(mode="after")
    def _one_source(self) -> TargetConfig:
        if (self.file is None) == (self.structure is None):
            raise ValueError(
                "give exactly one of 'file' (a target spectrum) or 'structure' (a target structure)"
            )
        if get_technique(self.technique).absorber and "absorber" not in self.settings:
            raise ValueError(f"settings.absorber is required for {self.technique} (e.g. absorber: Ni)")
        if self.processing is not None and (not get_technique(self.technique).absorber or self.file is None):
            raise ValueError("processing (raw μ(E) with Larch) applies to an XAS (EXAFS, XANES) target file")
        if self.technique == "exafs" and self.fit.model == "paths":
            # the FEFFIT-grade fit needs the candidates' scattering paths
            if self.settings.get("keep_paths") is False:
                raise ValueError(
                    "fit.model 'paths' needs settings.keep_paths: true (FEFF's scattering paths)"
                )
            self.settings = {**self.settings, "keep_paths": True}
        return self


class StoreConfig(_Strict):
    """Where campaign state goes: ``embedded`` (default, a directory) or ``mongodb`` (a URI)."""

    kind: Literal["embedded", "mongodb", "mongomock"] = "embedded"
    path: Path | None = None
    uri: str | None = None
    database: str = "aso"
    timeout_ms: int = Field(default=5000, gt=0)
    password_file: Path | None = None  # MongoDB password, read by each job (never stored or printed)


class CampaignConfig(_Strict):
    """A whole structure-determination campaign.

    Attributes
    ----------
    name
        Campaign id (letters, digits, ``-_.``); also the default output folder ``runs/<name>``.
    start
        Starting structure file (same composition and cell as the unknown).
    targets
        One or several target spectra; the objective is their weighted, normalised MSE sum.
    budget
        Number of structures simulated in all (each by every target technique), initial ones included.
    initial_size
        Structures made by perturbing the start (reference 30), plus the start itself.
    batch_size
        Candidates proposed and simulated per iteration (q; the reference uses 1).
    optimizer
        A registered optimiser (:mod:`aso_workflows.optimizers.registry`): ``aso`` (surrogate +
        acquisition + gradient proposals), or a baseline (docs/baselines.md) such as ``random``,
        ``rmc`` (reverse Monte Carlo), ``gpbo`` (GP Bayesian optimisation) or ``diffpy`` (pdffit2
        least-squares refinement; PDF targets only).
    rmc, gpbo, diffpy, ...
        An optimiser's own settings, in a section named by its class's ``section``; validated onto that
        class (read them with :meth:`section`).
    target_mismatch
        Stop early when the best objective falls to this value.
    max_failures
        Give up after this many failed simulations in a row (each failure is re-proposed).
    max_failed
        Give up after this many failed simulations in all (default: the budget); bounds the retries.
    simulation_timeout_s
        Wall-time limit of one simulator call in seconds (one FEFF absorber run; one PDF calculation):
        the run is killed and recorded as failed with ``failure_kind: walltime``. None: no limit.
    min_absorber_fraction
        XAS: a candidate succeeds if at least this fraction of its absorber runs succeeded (their
        average is its spectrum); default 1, every absorber must succeed. See docs/reliability.md.
    symmetry
        Search only structures of a space group: ``"start"`` (the start's own) or a subgroup of it by
        symbol or number (``"Pbnm"``): the sampler, the gradient proposals and the polish move the free
        coordinates of that group only (:mod:`aso_workflows.symmetry`). ``None``: every coordinate.
    restraints
        Bond-length windows and bond-valence sums the search and the polish respect
        (:mod:`aso_workflows.restraints`).
    polish
        End the campaign by refining its best structures (and its start) with pdffit2
        (:mod:`aso_workflows.optimizers.polish`); PDF targets only.
    """

    name: str
    start: Path
    targets: list[TargetConfig] = Field(min_length=1)
    budget: int = Field(default=100, gt=0)
    initial_size: int = Field(default=30, ge=1)
    batch_size: int = Field(default=1, ge=1)
    optimizer: str = "aso"
    seed: int = 0
    min_distances: dict[str, float] = Field(default_factory=dict)
    min_distance_scale: float = Field(default=0.7, gt=0)
    sampler: PerturbationSampler = Field(default_factory=PerturbationSampler)
    surrogate: SurrogateSettings = Field(default_factory=SurrogateSettings)
    acquisition: LCBSchedule = Field(default_factory=LCBSchedule)
    acquisition_metric: Literal["mae", "mse"] = "mae"
    proposal: GradientProposer = Field(default_factory=GradientProposer)
    surrogate_refine: SurrogateRefine = Field(default_factory=SurrogateRefine)
    target_mismatch: float | None = None
    max_failures: int = Field(default=5, ge=0)
    max_failed: int | None = Field(default=None, ge=1)
    simulation_timeout_s: float | None = Field(default=None, gt=0)
    min_absorber_fraction: float = Field(default=1.0, gt=0, le=1)
    symmetry: str | None = None
    restraints: Restraints | None = None
    polish: Polish | None = None
    output: Path | None = None
    store: StoreConfig = Field(default_factory=lambda: StoreConfig.model_validate({}))

    optimizers: dict[str, Any] = Field(default_factory=dict)
    """The optimisers' own sections (``rmc:``, ``gpbo:`` ...), written at the top level of the file and
    validated onto their registered classes; read them with :meth:`section`."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", v):
            raise ValueError("use letters, digits, '-', '_' or '.' (it names folders and database keys)")
        return v

    @field_validator("optimizer")
    @classmethod
    def _registered(cls, v: str) -> str:
        names = optimizer_names()
        if v not in names:
            raise ValueError(f"unknown optimizer {v!r}; expected one of {names}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _gather_sections(cls, raw: Any) -> Any:
        """Move the optimisers' top-level sections (``rmc:`` ...) into ``optimizers``."""
        if isinstance(raw, dict):
            raw = dict(raw)
            gathered = dict(raw.get("optimizers") or {})
            for key in optimizer_sections():
                if key in raw:
                    gathered[key] = raw.pop(key)
            raw["optimizers"] = gathered
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> CampaignConfig:
        sections = optimizer_sections()
        for key in list(self.optimizers):
            if key not in sections:
                raise ValueError(f"field '{key}': unknown field; expected one of {list(sections)}")
            self.optimizers[key] = _validate_section(key, sections[key], self.optimizers[key])
        for key, section_cls in sections.items():
            self.optimizers.setdefault(key, section_cls())
        techs = [t.technique for t in self.targets]
        if len(set(techs)) != len(techs):
            raise ValueError(f"each technique may appear once in targets (got {techs})")
        needs = optimizer_class(self.optimizer).required_techniques
        if needs and not set(needs) & set(techs):
            others = [n for n in optimizer_names() if not optimizer_class(n).required_techniques]
            raise ValueError(
                f"optimizer {self.optimizer!r} needs a {' or '.join(needs)} target, but the targets are "
                f"{techs}; add one or choose another optimizer ({', '.join(others)})"
            )
        if self.polish is not None and "pdf" not in techs:
            raise ValueError(f"polish refines against a PDF target, but the targets are {techs}")
        if self.initial_size + 1 > self.budget:
            raise ValueError(
                f"budget ({self.budget}) must exceed initial_size + 1 ({self.initial_size + 1}: the start "
                "structure is simulated too)"
            )
        if self.surrogate.prior and optimizer_class(self.optimizer).needs_surrogate:
            # the EXAFS prior re-sums FEFF's scattering paths: keep them, unless the file says not to
            for t in self.targets:
                if t.technique == "exafs" and "keep_paths" not in t.settings:
                    t.settings = {**t.settings, "keep_paths": True}
        return self

    def section(self, name: str) -> Any:
        """An optimiser's own settings section (``"rmc"``, ``"gpbo"`` ...), defaults filled in."""
        if name not in self.optimizers:
            raise KeyError(f"no optimizer section {name!r}; the registered ones are {list(self.optimizers)}")
        return self.optimizers[name]

    # ---- derived --------------------------------------------------------------------------------
    @property
    def output_dir(self) -> Path:
        return Path(self.output) if self.output is not None else Path("runs") / self.name

    def store_spec(self) -> StoreSpec:
        s = self.store
        path = s.path if s.path is not None else self.output_dir / "store"
        return StoreSpec(
            kind=s.kind,
            path=str(Path(path).resolve()) if s.kind == "embedded" else None,
            uri=s.uri,
            database=s.database,
            timeout_ms=s.timeout_ms,
            password_file=str(s.password_file) if s.password_file is not None else None,
        )

    def to_document(self) -> dict:
        """JSON-able form stored in the ``campaigns`` collection (paths absolute, store password masked);
        the optimisers' sections at the top level, as in the campaign file."""
        doc = self.model_dump(mode="json")
        doc.update(doc.pop("optimizers"))
        if doc.get("store", {}).get("uri"):
            doc["store"]["uri"] = redact_uri(doc["store"]["uri"])
        return doc


def _validate_section(key: str, cls: type, value: Any) -> Any:
    """``value`` (a mapping from the file, or an instance) validated onto ``cls``; errors name ``key.field``."""
    if isinstance(value, cls):
        return value
    try:
        return TypeAdapter(cls).validate_python(value if value is not None else {})
    except ValidationError as exc:
        raise ValueError(validation_message(exc, root=cls, prefix=(key,))) from None


ENGINE_OWNED: dict[str, dict[str, str]] = {
    "proposal": {"q": "batch_size", "seed": "seed", "constraint": "symmetry/restraints"},
    "sampler": {
        "seed": "seed",
        "min_distances": "min_distances",
        "min_distance_scale": "min_distance_scale",
        "constraint": "symmetry/restraints",
    },
}
"""Fields of a section that the campaign sets from one of its top-level fields: ``{section: {field: top}}``."""


def _refuse_engine_owned(raw: dict) -> None:
    """A campaign file may not set a field the campaign overrides (it would be silently ignored)."""
    for section, fields in ENGINE_OWNED.items():
        given = raw.get(section)
        if not isinstance(given, dict):
            continue
        for name, top in fields.items():
            if name in given:
                raise ValueError(
                    f"field '{section}.{name}': set by the campaign from its top-level '{top}'; "
                    f"give '{top}' at the top level of the campaign file instead"
                )


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _known_fields(loc: tuple, root: type | None = None) -> list[str]:
    """The field names accepted at ``loc`` (a pydantic error location) of ``root`` (the campaign file)."""
    import dataclasses
    import typing

    cls: object = root or CampaignConfig
    if not loc and cls is CampaignConfig:
        return [f for f in CampaignConfig.model_fields if f != "optimizers"] + list(optimizer_sections())
    for part in loc:
        if isinstance(part, int):
            continue
        if isinstance(cls, type) and issubclass(cls, BaseModel) and part in cls.model_fields:
            ann = cls.model_fields[part].annotation
        elif dataclasses.is_dataclass(cls) and part in {f.name for f in dataclasses.fields(cls)}:
            ann = typing.get_type_hints(cls).get(part)
        else:
            return []
        args = typing.get_args(ann)
        cls = args[0] if typing.get_origin(ann) is list and args else ann
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    return []


def validation_message(exc: ValidationError, root: type | None = None, prefix: tuple = ()) -> str:
    """One line from a pydantic ValidationError: ``field 'a.b': message (and N more problems)``.

    ``root`` is the model or dataclass that was validated (default: the campaign file) and ``prefix``
    the location of that object in the campaign file.
    """
    errs = exc.errors()
    first = errs[0]
    raw_loc = tuple(p for p in first["loc"] if p not in ("function-after",))
    loc = _format_loc(prefix + raw_loc)
    msg = first["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if msg.startswith("field '"):  # a nested validator already named the field (optimiser sections)
        return msg
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        known = _known_fields(raw_loc[:-1], root)
        msg = "unknown field" + (f"; expected one of {known}" if known else " (check the spelling)")
    more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return (f"field '{loc}': {msg}" if loc else msg) + more


@dataclass(frozen=True)
class ConfigOverrides:
    """Campaign fields given on the command line (``aso run --optimizer rmc --budget 40``), which win over
    the file's; ``None`` leaves the file's value. They are validated with the rest of the file (an
    unknown ``optimizer`` is the same one-line error as in the file).

    Attributes
    ----------
    output
        Output folder (made absolute against the current directory).
    budget, seed, optimizer, name
        :class:`CampaignConfig`'s fields of the same names.
    """

    output: Path | None = None
    budget: int | None = None
    seed: int | None = None
    optimizer: str | None = None
    name: str | None = None

    def fields(self) -> dict[str, Any]:
        """The campaign-file fields these overrides set."""
        given: dict[str, Any] = {
            "budget": self.budget,
            "seed": self.seed,
            "optimizer": self.optimizer,
            "name": self.name,
            "output": str(Path(self.output).resolve()) if self.output is not None else None,
        }
        return {k: v for k, v in given.items() if v is not None}


def load_config(
    path: str | Path, overrides: ConfigOverrides | None = None, check_files: bool = True
) -> CampaignConfig:
    """Read and validate a campaign YAML file.

    Relative paths of structures and target files are taken relative to the YAML file's folder; the
    output folder relative to the current directory. ``overrides`` (the command line's) win over the
    file's fields. With ``check_files`` (the default) the structures and target files are read too
    (:func:`check_inputs`); commands that only need to find the campaign's store (``aso status``,
    ``results``, ``report``) skip that.

    Raises
    ------
    InputError
        One line naming the file and the field that is wrong.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "campaign file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(p, f"not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise InputError(p, "expected a mapping of campaign fields (name, start, targets, budget, ...)")
    raw.update(overrides.fields() if overrides is not None else {})
    try:
        _refuse_engine_owned(raw)
    except ValueError as exc:
        raise InputError(p, str(exc)) from None
    base = p.resolve().parent
    if isinstance(raw.get("start"), str):
        raw["start"] = str(_resolve(base, raw["start"]))
    for t in raw.get("targets") or []:
        if isinstance(t, dict):
            for key in ("file", "structure"):
                if isinstance(t.get(key), str):
                    t[key] = str(_resolve(base, t[key]))
    if isinstance(raw.get("store"), dict) and isinstance(raw["store"].get("password_file"), str):
        raw["store"]["password_file"] = str(_resolve(base, raw["store"]["password_file"]))
    try:
        cfg = CampaignConfig.model_validate(raw)
    except ValidationError as exc:
        raise InputError(p, validation_message(exc)) from None
    _settings_from_target_files(cfg)
    if not check_files:
        return cfg
    missing = [str(f) for f in [cfg.start] + [t.source for t in cfg.targets] if not Path(f).is_file()]
    if missing:
        raise InputError(p, f"file(s) named in the campaign do not exist: {', '.join(missing)}")
    check_inputs(cfg, p)
    return cfg


def _settings_from_target_files(cfg: CampaignConfig) -> None:
    """A target's settings that its file's header gives (PDF: ``qmax``/``radiation``; the technique's
    ``header_settings``) when its settings do not give them (docs/measured.md); the settings always win."""
    from aso_workflows.spectra.targets import settings_with_hints, target_hints

    for t in cfg.targets:
        header_settings = get_technique(t.technique).header_settings
        if t.file is not None and header_settings and Path(t.file).is_file():
            try:
                t.settings = settings_with_hints(t.technique, t.settings, target_hints(t.file))
            except InputError:
                pass  # an unreadable file is reported, with its line, by check_inputs


def _check_folder(path: Path, source: str | Path, field: str) -> None:
    """``path`` is a folder, or one can be created there (nothing is created now)."""
    import os

    p = Path(path).expanduser().absolute()
    for existing in (p, *p.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            raise InputError(source, f"field '{field}': {existing} is a file; expected a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InputError(
                source, f"field '{field}': {existing} is not writable; expected a writable folder"
            )
        return


def check_inputs(cfg: CampaignConfig, source: str | Path) -> None:
    """Read the start structure and every target now, so bad input fails before any store is touched.

    Checks that the structures parse, that each XAS absorber is an element of the start (and target)
    structure, that the simulator settings are accepted and that target files parse (numbers, no NaN,
    increasing abscissa) and cover the simulator's grid. Runs on resume too: a stored campaign is never
    continued from a file that has since become unreadable.

    Raises
    ------
    InputError
        One line: the structure or target file and its problem, or ``<source>: field 'targets[i]...'``.
    """
    from aso_workflows.spectra.registry import make_simulator
    from aso_workflows.spectra.targets import read_target
    from aso_workflows.structures import load_structure

    _check_folder(cfg.output_dir, source, "output")
    if cfg.store.kind == "embedded" and cfg.store.path is not None:
        _check_folder(cfg.store.path, source, "store.path")
    start = load_structure(cfg.start)
    _check_symmetry(cfg, start, source)
    for i, t in enumerate(cfg.targets):
        where = f"targets[{i}]"
        try:
            sim = make_simulator(t.technique, **t.settings)
        except InputError as exc:  # source: "<technique>.settings" (unknown names) or the setting's name
            field = f"{where}.settings" + ("" if exc.source.endswith(".settings") else f".{exc.source}")
            raise InputError(source, f"field '{field}': {exc.problem}") from None
        structures = {cfg.start: start}
        if t.structure is not None:
            structures[t.structure] = load_structure(t.structure)
        absorber = str(t.settings.get("absorber", "")).strip().capitalize()
        for path, s in structures.items() if absorber else ():
            elements = sorted({el.symbol for el in s.composition.elements})
            if absorber not in elements:
                raise InputError(
                    source,
                    f"field '{where}.settings.absorber': no {absorber} in {Path(path).name} "
                    f"({s.composition.reduced_formula}); expected one of its elements {elements}",
                )
        target = None
        if t.file is not None:
            try:
                # with the simulator: a file contradicting its settings (radiation, k-weight) is refused
                target = read_target(
                    t.file, t.technique, simulator=sim, processing=t.processing, **t.read_options
                )
            except InputError as exc:
                if exc.source.startswith(("read_options", "processing", "fit.")):
                    raise InputError(source, f"field '{where}.{exc.source}': {exc.problem}") from None
                raise
        if t.fit.active:
            _check_fit(t, sim, target, source, where)


def _check_symmetry(cfg: CampaignConfig, start: Any, source: str | Path) -> None:
    """``symmetry`` and ``restraints`` against the start structure (one line naming the field)."""
    from aso_workflows.symmetry import symmetry_constraints

    try:
        if cfg.symmetry is not None:
            symmetry_constraints(start, None if cfg.symmetry == "start" else cfg.symmetry)
        if cfg.restraints is not None:
            cfg.restraints.compile(start)
    except InputError as exc:
        raise InputError(source, f"field '{exc.source}': {exc.problem}") from None
    for t in cfg.targets:
        fit_symmetry = getattr(t.fit, "symmetry", None)
        if fit_symmetry not in (None, "start"):
            try:
                symmetry_constraints(start, fit_symmetry)
            except InputError as exc:
                raise InputError(source, f"field 'fit.{exc.source}': {exc.problem}") from None


def _check_fit(
    t: TargetConfig, sim: Simulator, target: Spectrum | None, source: str | Path, where: str
) -> None:
    """The target's ``fit`` declaration against its technique and grid (one line naming the field)."""
    from aso_workflows.spectra.fit import make_fitter
    from aso_workflows.spectra.spectrum import Spectrum

    if target is None:  # a target simulated from a structure: same grid, no uncertainties
        grid = sim.grid()
        target = Spectrum(technique=t.technique, grid=grid, values=[0.0] * len(grid.values))
    try:
        make_fitter(t.technique, t.fit, target, sim)
    except InputError as exc:
        raise InputError(source, f"field '{where}.{exc.source}': {exc.problem}") from None


def _resolve(base: Path, value: str) -> Path:
    v = Path(value).expanduser()
    return v if v.is_absolute() else (base / v)
