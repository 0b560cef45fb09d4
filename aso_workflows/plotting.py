"""Writing matplotlib figures: one helper for every plot the package writes (CLI, report, web GUI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aso_workflows.errors import InputError

__all__ = ["save_figure"]


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Write a matplotlib figure (creating the folder) and close it; an unwritable path is one line."""
    import matplotlib.pyplot as plt

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    except OSError as exc:
        raise InputError(path, f"cannot write the plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
