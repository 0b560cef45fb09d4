"""Progress reporting for campaigns run in this process (the local executor installs a bar).

Jobs call :func:`notify` after each evaluation; when no reporter is installed (cluster jobs) it does
nothing.
"""

from __future__ import annotations

from collections.abc import Callable

_REPORTERS: list[Callable] = []


def install(reporter: Callable) -> None:
    """Register ``reporter(state)``, called after every recorded evaluation."""
    _REPORTERS.append(reporter)


def uninstall(reporter: Callable) -> None:
    if reporter in _REPORTERS:
        _REPORTERS.remove(reporter)


def notify(state) -> None:
    for r in list(_REPORTERS):
        r(state)


class TqdmReporter:
    """A tqdm bar: simulations used / budget, with the best mismatch so far."""

    def __init__(self, budget: int, initial: int = 0, desc: str = "simulations"):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=budget, initial=initial, desc=desc, unit="sim", dynamic_ncols=True)

    def __call__(self, state) -> None:
        n = state.n_used()
        b = state.best(1)
        best = b[0]["objective"] if b else None
        if best is not None:
            self.bar.set_postfix_str(f"best mismatch {best:.3e}", refresh=False)
        self.bar.update(min(n, self.bar.total) - self.bar.n)

    def close(self) -> None:
        self.bar.close()
