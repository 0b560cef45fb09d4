"""Optimiser registry: the name in a campaign file → the class that proposes the next candidates.

An optimiser is one module of :mod:`aso_workflows.optimizers` whose class is decorated with
:func:`register_optimizer`; nothing else needs to change to add one. The class's ``section`` (a
``ClassVar``) names the campaign-file section that holds its settings, if it has any (``rmc:``,
``gpbo:`` ...): the configuration validates that section onto the class itself.

The registry imports every module of the package the first time it is asked, so optimiser modules stay
light at import: torch, botorch and diffpy are imported inside the methods that use them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from aso_workflows.errors import InputError

if TYPE_CHECKING:
    from aso_workflows.optimizers.base import CampaignSettingsView, Optimizer

__all__ = [
    "register_optimizer",
    "optimizer_class",
    "optimizer_classes",
    "optimizer_names",
    "optimizer_sections",
    "optimizer_summaries",
    "make_optimizer",
]

_REGISTRY: dict[str, type[Optimizer]] = {}
_DISCOVERED = False
OptimizerType = TypeVar("OptimizerType", bound="type[Optimizer]")


def register_optimizer(name: str) -> Callable[[OptimizerType], OptimizerType]:
    """Class decorator: register an :class:`~aso_workflows.optimizers.base.Optimizer` under ``name``."""

    def deco(cls: OptimizerType) -> OptimizerType:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"optimizer {name!r} registered twice ({_REGISTRY[name]!r} and {cls!r})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _discover() -> None:
    """Import every module of the optimizers package once (each registers its optimisers)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = importlib.import_module("aso_workflows.optimizers")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in ("base", "registry"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    _DISCOVERED = True


def optimizer_classes() -> dict[str, type[Optimizer]]:
    """Every registered optimiser by name, in alphabetical order."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def optimizer_names() -> list[str]:
    """The names accepted as ``optimizer:`` in a campaign file."""
    return list(optimizer_classes())


def optimizer_summaries() -> dict[str, str]:
    """``{name: summary}`` of every registered optimiser: the first paragraph of its class docstring on
    one line, without its final full stop (what ``aso run --help`` lists)."""
    out = {}
    for name, cls in optimizer_classes().items():
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        out[name] = " ".join(doc.split()).rstrip(".")
    return out


def optimizer_sections() -> dict[str, type]:
    """``{section: class}`` of the optimisers that read a section of their own from the campaign file."""
    return {cls.section: cls for cls in optimizer_classes().values() if cls.section is not None}


def optimizer_class(name: str) -> type[Optimizer]:
    """The class registered as ``name``.

    Raises
    ------
    InputError
        On ``optimizer`` with the list of registered names.
    """
    classes = optimizer_classes()
    if name not in classes:
        raise InputError("optimizer", f"unknown optimizer {name!r}; expected one of {list(classes)}")
    return classes[name]


def make_optimizer(name: str, config: CampaignSettingsView) -> Optimizer:
    """The optimiser ``name`` configured from a :class:`~aso_workflows.config.CampaignConfig`."""
    return optimizer_class(name).from_config(config)
