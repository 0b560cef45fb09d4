"""Progress display: one campaign bar plus one bar for the phase that runs now.

``aso run`` installs a :class:`CampaignDisplay`: a bar of simulations used / budget (with the best
mismatch) and, below it, one bar reused by every long phase (training an ensemble, a proposal search),
so a terminal shows two lines whatever the campaign does. ``aso run --quiet`` installs none.

Engines report through :func:`phase` and jobs through :func:`notify`; both do nothing when no display is
installed and the engine is not shown on its own (cluster jobs write to log files: no bars there). An
engine used on its own (a notebook, a benchmark) with its ``progress`` setting on gets a bar of its own
when standard error is a terminal.

This module imports nothing heavy; tqdm is imported when a bar is drawn.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["CampaignDisplay", "Quiet", "Phase", "install", "uninstall", "notify", "phase", "installed"]

_DISPLAYS: list[Any] = []


def install(display: Any) -> None:
    """Register a display: ``display(state)`` is called after every recorded evaluation and, if it has
    ``phase_bar``, long phases draw on it."""
    _DISPLAYS.append(display)


def uninstall(display: Any) -> None:
    if display in _DISPLAYS:
        _DISPLAYS.remove(display)


def installed() -> Any | None:
    """The display installed last, if any."""
    return _DISPLAYS[-1] if _DISPLAYS else None


def notify(state: Any) -> None:
    """An evaluation was recorded: update the installed displays."""
    for d in list(_DISPLAYS):
        d(state)


class Phase:
    """The bar of one phase: ``update()`` once per step, with optional key numbers to show."""

    def __init__(self, bar: Any | None = None, owned: bool = False):
        self._bar = bar
        self._owned = owned

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None and self._owned:
            self._bar.close()


@contextlib.contextmanager
def phase(desc: str, total: int, enabled: bool = True) -> Iterator[Phase]:
    """A phase of ``total`` steps: drawn on the campaign display's phase bar when one is installed,
    else on a bar of its own if ``enabled`` and standard error is a terminal, else not at all."""
    display = installed()
    if display is not None:
        bar = getattr(display, "phase_bar", None)
        if bar is not None:
            bar.reset(total=total)
            bar.set_description_str(desc, refresh=False)
        yield Phase(bar)
        return
    if not (enabled and sys.stderr.isatty()):
        yield Phase(None)
        return
    from tqdm.auto import tqdm

    p = Phase(tqdm(total=total, desc=desc, leave=False, **_width()), owned=True)
    try:
        yield p
    finally:
        p.close()


def _width() -> dict[str, Any]:
    """tqdm's size: follow the terminal when it reports one; a pseudo-terminal that reports 0 × 0 (some
    batch systems and CI runners) would make tqdm hide every bar, so it gets 100 × 24."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    return {"dynamic_ncols": True} if size.columns > 0 and size.lines > 0 else {"ncols": 100, "nrows": 24}


class Quiet:
    """The display of ``aso run --quiet``: no bar at all, whatever the engines' ``progress`` settings."""

    phase_bar = None

    def __call__(self, state: Any) -> None:
        pass

    def close(self) -> None:
        pass


class CampaignDisplay:
    """Two bars: simulations used / budget with the best mismatch, and the current phase.

    On a terminal both redraw in place; written to a file (a log), the phase bar is left out and the
    campaign bar is redrawn at most every ``log_interval`` seconds, so a log gets a few lines, not one
    per step.
    """

    def __init__(self, budget: int, initial: int = 0, desc: str = "simulations", log_interval: float = 60.0):
        from tqdm.auto import tqdm

        tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=budget,
            initial=initial,
            desc=desc,
            unit="sim",
            position=0,
            mininterval=0.1 if tty else log_interval,
            **_width(),
        )
        self.phase_bar = (
            tqdm(
                total=1,
                desc="",
                position=1,
                leave=False,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} {postfix}",
            )
            if tty
            else None
        )

    def __call__(self, state: Any) -> None:
        n = state.n_used()
        b = state.best(1)
        best = b[0]["objective"] if b else None
        if best is not None:
            self.bar.set_postfix_str(f"best mismatch {best:.3e}", refresh=False)
        self.bar.update(min(n, self.bar.total) - self.bar.n)

    def close(self) -> None:
        if self.phase_bar is not None:
            self.phase_bar.close()
        self.bar.close()
