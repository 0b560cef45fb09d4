"""The technique registry: one entry per spectroscopy technique, from which everything else derives.

A technique (PDF, EXAFS, XANES, and the next one) is one :class:`TechniqueEntry`. It names

* its **simulator** (a :class:`~aso_workflows.spectra.base.Simulator` class),
* its **target reader** (a :class:`~aso_workflows.spectra.targets.base.TargetReader` class that turns a
  target file into values on the technique's grid),
* its **nuisance fitter** (a :class:`~aso_workflows.spectra.fit.base.NuisanceFitter` class, or none),
* its **goodness of fit** (the name the field quotes and the function computing it),
* its **grid** (name and unit) and **axis labels**, extra **plot panels**, summary rows,
* what the **surrogate** needs (level, per-site rows, readout range, absorber).

Every list of techniques in the package is read from here: the ``technique`` of a campaign target and of
a :class:`~aso_workflows.spectra.spectrum.Spectrum`, the simulator and fitter registries, the goodness
names, the report's and ``aso simulate``'s labels, the surrogate factory and ``read_target``. Adding a
technique is one :func:`register_technique` call (``docs/architecture.md``, "Adding a technique").

Classes and functions are named as ``"module:attribute"`` strings and imported on first use, so reading
a campaign file never imports torch, diffpy or FEFF; an entry made at run time (a test, a plug-in) may
give the objects themselves.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aso_workflows.errors import InputError
from aso_workflows.spectra.goodness import r_factor, rw

__all__ = [
    "Panel",
    "SurrogateNeeds",
    "TechniqueEntry",
    "register_technique",
    "get_technique",
    "technique_names",
    "technique_entries",
    "spelled_out",
    "registered",
    "load_ref",
]

Ref = str | Callable[..., Any]
"""A class or function, or its ``"module:attribute"`` path (imported on first use)."""


def load_ref(ref: Ref) -> Any:
    """The object a :data:`Ref` names (``"module:attribute"`` is imported; an object is returned as is).

    Raises
    ------
    ImportError, AttributeError
        The module does not import or has no such attribute.
    """
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Panel:
    """An extra plot panel of ``aso simulate --plot``: ``spectrum.extra[y]`` against ``spectrum.extra[x]``
    (drawn when the spectrum carries both, equally long)."""

    x: str
    y: str
    x_label: str
    y_label: str


@dataclass(frozen=True)
class SurrogateNeeds:
    """What the technique's surrogate learns (:mod:`aso_workflows.surrogate.factory` reads it).

    Attributes
    ----------
    level
        ``"node"`` (per-site rows, averaged) or ``"graph"`` (one row per structure).
    level_setting
        A :class:`~aso_workflows.surrogate.settings.SurrogateSettings` field that chooses the level
        instead (PDF: ``pdf_level``), or ``None``.
    site_rows
        A function ``(simulator, structure, workdir) → Spectrum`` adding per-site rows that the
        simulator does not produce itself, used for a node-level surrogate (PDF: the per-atom partial
        G_i(r)); ``None`` when the simulator's spectra carry them (XAS: one row per absorber) or the
        level is ``graph``.
    readout_margin
        The surrogate's readout reaches the grid's last point plus this (Å; PDF: every pair distance
        that shapes G(r) on the grid is seen), unless ``readout_cutoff`` is set; ``None``: the readout
        uses the message-passing basis.
    """

    level: Literal["node", "graph"] = "node"
    level_setting: str | None = None
    site_rows: Ref | None = None
    readout_margin: float | None = None


@dataclass(frozen=True)
class TechniqueEntry:
    """One spectroscopy technique: everything the package needs to know of it.

    Attributes
    ----------
    name
        The name used in campaign files, spectra and the store (``"pdf"``).
    simulator
        The :class:`~aso_workflows.spectra.base.Simulator` class (settings are its fields).
    reader
        The :class:`~aso_workflows.spectra.targets.base.TargetReader` class reading target files.
    fitter
        The :class:`~aso_workflows.spectra.fit.base.NuisanceFitter` class of a target's ``fit:``, or
        ``None`` (the technique then accepts no ``fit``).
    fit_models
        Other fitters a target chooses with ``fit: {model: name}`` (EXAFS ``paths``: the FEFFIT-grade
        fit on the candidate's FEFF paths).
    goodness
        The goodness-of-fit figure the field quotes (``"Rw"``, ``"R"``).
    goodness_function
        ``(observed, calculated) → float`` computing it (:mod:`~aso_workflows.spectra.goodness`).
    grid, unit
        The name and unit of the technique's abscissa (``"r"``, ``"Å"``).
    x_labels
        Axis label per grid name (``{"e": "E − E0 (eV)", "E": "E (eV)"}``); other names: ``"name (unit)"``.
    y_label
        Axis label of the values (``"G(r) (Å⁻²)"``).
    description
        A few words for help texts (``"pair distribution function G(r)"``).
    absorber
        Whether the technique has an absorbing element (``settings.absorber`` required; XAS).
    header_settings
        Simulator settings a target file's header may give when the target's settings do not
        (PDF: ``qmax``, ``radiation``).
    panels
        Extra plot panels of ``aso simulate --plot``.
    summary
        A function ``Spectrum → [(label, text)]`` of extra rows in ``aso simulate``'s summary, or ``None``.
    surrogate
        What the surrogate learns.
    """

    name: str
    simulator: Ref
    reader: Ref
    fitter: Ref | None
    goodness: str
    goodness_function: Callable[[Any, Any], float]
    grid: str
    unit: str
    y_label: str
    x_labels: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    absorber: bool = False
    header_settings: tuple[str, ...] = ()
    panels: tuple[Panel, ...] = ()
    summary: Ref | None = None
    surrogate: SurrogateNeeds = field(default_factory=SurrogateNeeds)
    fit_models: Mapping[str, Ref] = field(default_factory=dict)

    def x_label(self, grid_name: str | None = None, unit: str | None = None) -> str:
        """The axis label of a grid of this technique (default: the technique's own grid)."""
        name = grid_name or self.grid
        return self.x_labels.get(name, f"{name} ({unit or self.unit})")


_REGISTRY: dict[str, TechniqueEntry] = {}


def register_technique(entry: TechniqueEntry) -> TechniqueEntry:
    """Add a technique to the registry (its name must be new).

    Raises
    ------
    ValueError
        Another entry has the same name, or the name is not a lowercase identifier.
    """
    if not entry.name.isidentifier() or entry.name != entry.name.lower():
        raise ValueError(f"a technique name is a lowercase identifier, got {entry.name!r}")
    if entry.name in _REGISTRY and _REGISTRY[entry.name] is not entry:
        raise ValueError(f"technique {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def technique_names() -> list[str]:
    """The registered techniques, in registration order (``["pdf", "exafs", "xanes", ...]``)."""
    return list(_REGISTRY)


def technique_entries() -> list[TechniqueEntry]:
    """Every registered entry, in registration order."""
    return list(_REGISTRY.values())


def spelled_out(names: list[str] | None = None) -> str:
    """``"'pdf', 'exafs' or 'xanes'"``: the techniques (default: all) as a sentence lists them."""
    quoted = [repr(n) for n in (technique_names() if names is None else names)]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def registered(name: str) -> str:
    """``name`` if it is a registered technique (a pydantic validator of ``technique`` fields).

    Raises
    ------
    ValueError
        ``unknown technique 'saxs'; expected 'pdf', 'exafs' or 'xanes'``.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown technique {name!r}; expected {spelled_out()}")
    return name


def get_technique(name: object) -> TechniqueEntry:
    """The entry of technique ``name``.

    Raises
    ------
    InputError
        On field ``technique``: ``unknown technique 'saxs'; expected one of ['pdf', 'exafs', 'xanes']``.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise InputError("technique", f"unknown technique {name!r}; expected one of {technique_names()}")
    return _REGISTRY[name]


# ---- the built-in techniques ----------------------------------------------------------------------------
register_technique(
    TechniqueEntry(
        name="pdf",
        simulator="aso_workflows.spectra.pdf:PDFSimulator",
        reader="aso_workflows.spectra.targets.pdf:PDFTargetReader",
        fitter="aso_workflows.spectra.fit.pdf:PDFFitter",
        goodness="Rw",
        goodness_function=rw,
        grid="r",
        unit="Å",
        x_labels={"r": "r (Å)"},
        y_label="G(r) (Å⁻²)",
        description="pair distribution function G(r)",
        header_settings=("qmax", "radiation"),
        surrogate=SurrogateNeeds(
            level_setting="pdf_level",
            site_rows="aso_workflows.spectra.pdf_partials:simulate_with_sites",
            # a pair at distance d shapes G(r) over ±5σ (σ = 0.23 Å for the reference's Biso = 2)
            # plus the Qmax termination ripples
            readout_margin=1.0,
        ),
    )
)
register_technique(
    TechniqueEntry(
        name="exafs",
        simulator="aso_workflows.spectra.exafs:EXAFSSimulator",
        reader="aso_workflows.spectra.targets.exafs:EXAFSTargetReader",
        fitter="aso_workflows.spectra.fit.exafs:EXAFSFitter",
        goodness="R",
        goodness_function=r_factor,
        grid="k",
        unit="Å^-1",
        x_labels={"k": "k (Å⁻¹)"},
        y_label="k^w χ(k)",
        description="k-weighted χ(k) (FEFF)",
        absorber=True,
        panels=(Panel(x="r", y="chir_mag", x_label="R (Å)", y_label="|χ(R)|"),),
        summary="aso_workflows.spectra.analysis:exafs_summary",
        fit_models={"paths": "aso_workflows.spectra.fit.feffit:FeffitFitter"},
    )
)
register_technique(
    TechniqueEntry(
        name="xanes",
        simulator="aso_workflows.spectra.xanes:XANESSimulator",
        reader="aso_workflows.spectra.targets.xanes:XANESTargetReader",
        fitter="aso_workflows.spectra.fit.xanes:XANESFitter",
        goodness="R",
        goodness_function=r_factor,
        grid="e",
        unit="eV",
        x_labels={"e": "E − E0 (eV)", "E": "E (eV)"},
        y_label="normalised μ(E)",
        description="normalised μ(E) (FEFF)",
        absorber=True,
    )
)
