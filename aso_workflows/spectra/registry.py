"""Simulators by technique: a technique name and settings → a configured :class:`Simulator`.

Which class simulates a technique is its entry's ``simulator`` in the technique registry
(:mod:`aso_workflows.spectra.techniques`), imported on first use: the FEFF modules are only needed for XAS.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from aso_workflows.errors import InputError
from aso_workflows.spectra.base import Simulator
from aso_workflows.spectra.techniques import get_technique, load_ref

__all__ = ["simulator_class", "make_simulator", "simulator_settings"]


def simulator_class(technique: str) -> type[Simulator]:
    """The simulator class of a technique.

    Raises
    ------
    InputError
        On field ``technique`` if the name is unknown or its module does not import.
    """
    entry = get_technique(technique)
    try:
        cls: type[Simulator] = load_ref(entry.simulator)
        return cls
    except (ImportError, AttributeError) as exc:
        raise InputError("technique", f"the {technique} simulator is not available ({exc})") from None


def simulator_settings(technique: str) -> list[str]:
    """The setting names a technique's simulator accepts (its dataclass fields)."""
    cls = simulator_class(technique)
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    params = inspect.signature(cls).parameters.values()  # a plain class: its constructor's keywords
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def make_simulator(technique: str, **settings: Any) -> Simulator:
    """A simulator for a registered ``technique`` (``"pdf"``, ``"exafs"``, ``"xanes"`` ...) with the given
    settings.

    Raises
    ------
    InputError
        Naming the field: unknown technique, unknown setting names (listing the allowed ones), or a
        value the simulator rejects.
    """
    cls = simulator_class(technique)
    allowed = simulator_settings(technique)
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise InputError(
            f"{technique}.settings", f"unknown setting(s) {unknown}; {technique} accepts {sorted(allowed)}"
        )
    from pydantic import ValidationError

    try:
        return cls(**settings)
    except InputError:
        raise
    except ValidationError as exc:  # a settings_dataclass: name the setting, as InputError does
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or f"{technique}.settings"
        raise InputError(name, first["msg"].removeprefix("Value error, ")) from None
    except (TypeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{technique}.settings", msg) from None
