"""The optional xraylarch dependency: raw μ(E) processing, FEFF paths and FEFFIT (``aso-workflows[xas]``).

xraylarch (Larch) is the reference implementation of the XAFS analysis users already run (Athena's
pre-edge and AUTOBK, Artemis' FEFFIT), so the project calls it instead of re-writing it. It is a large
install (silx, pyFAI, scikit-learn ...; importing ``larch.xafs`` takes 3–8 s), hence an optional extra:
every module that needs it imports it inside its functions through :func:`larch_modules`, which turns
its absence into one line saying how to install it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

from aso_workflows.errors import InputError

__all__ = ["XAS_EXTRA", "larch_modules", "quiet"]

XAS_EXTRA = "pip install 'aso-workflows[xas]'"
"""How to install xraylarch with the project."""


def larch_modules(what: str) -> tuple[ModuleType, ModuleType]:
    """``(larch.xafs, larch.io)``, imported now.

    Parameters
    ----------
    what
        What needs them, for the error message (e.g. ``"processing"`` or a file name).

    Raises
    ------
    InputError
        xraylarch is not installed (one line: what needs it and how to install it).
    """
    try:
        import larch.io
        import larch.xafs
    except ImportError as exc:
        raise InputError(
            what,
            f"raw μ(E) processing and FEFFIT fits need xraylarch ({exc.name} does not import); {XAS_EXTRA}",
        ) from None
    return larch.xafs, larch.io


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence what Larch prints on standard output (warnings of its readers and fits).

    Into a real (null) file, not a ``StringIO``: Larch reads ``sys.stdout.encoding`` when it decodes
    an Athena project.
    """
    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        yield
