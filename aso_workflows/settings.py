"""One validation path for settings: pydantic dataclasses.

Every class that is a section of the campaign file (the sampler, the surrogate, the proposer, the
acquisition schedule, each optimiser's own section) is a dataclass made with :func:`settings_dataclass`.
pydantic validates its fields whenever it is constructed — from YAML through :mod:`aso_workflows.config`
or directly in Python — so a wrong value is one error that names the field, and each range is declared
next to its field (``Annotated[float, Field(gt=0)]`` or a ``field_validator``) instead of being checked
by hand in ``__post_init__``.

This module imports nothing heavy: the campaign configuration imports the settings classes, and reading
a campaign file must not load torch, botorch, diffpy or FEFF.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as _pydantic_dataclass
from typing_extensions import dataclass_transform  # typing's own from Python 3.11; pydantic requires this

__all__ = ["SETTINGS_CONFIG", "settings_dataclass"]

SETTINGS_CONFIG = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
"""Unknown fields are errors (a typo never silently means the default); any Python type may be a field."""

T = TypeVar("T", bound=type)


@overload
def settings_dataclass(cls: T, /) -> T: ...
@overload
def settings_dataclass(cls: None = None, /, **kwargs: Any) -> Callable[[T], T]: ...
@dataclass_transform(field_specifiers=(dataclasses.field, Field))
def settings_dataclass(cls: T | None = None, /, **kwargs: Any) -> T | Callable[[T], T]:
    """``@settings_dataclass``: a standard dataclass whose fields pydantic validates on construction.

    ``dataclasses.fields``, ``dataclasses.replace`` and ``asdict`` work as for any dataclass (``replace``
    validates again). Keyword arguments are passed to :func:`pydantic.dataclasses.dataclass`.
    """

    def wrap(c: T) -> T:
        # pydantic types its result as ``type[PydanticDataclass]``; it is the class ``c`` itself, made a dataclass
        return cast(T, _pydantic_dataclass(c, config=SETTINGS_CONFIG, **kwargs))

    return wrap if cls is None else wrap(cls)
