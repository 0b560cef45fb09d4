"""What every ``aso`` command shares: one-line errors, common options, JSON and table output.

Commands report user errors (:class:`~aso_workflows.errors.AsoError`, pydantic validation errors) as one
line ``error: <message>`` on stderr with exit code 2, never a traceback: wrap a command's body in
``with guard():``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any, NoReturn

import typer

from aso_workflows.errors import AsoError, InputError

__all__ = [
    "EXIT_USER_ERROR",
    "CampaignArg",
    "DatabaseOption",
    "JsonOption",
    "StoreOption",
    "clean_json",
    "console",
    "fail",
    "fmt",
    "guard",
    "open_campaign",
    "parse_settings",
    "print_json",
    "run_summary",
    "warn_inline_passwords",
]

EXIT_USER_ERROR = 2

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Campaign store: a mongodb:// URI or an embedded store folder (default: $ASO_STORE, "
        "else the campaign file's store, else runs/<name>/store).",
        show_default=False,
    ),
]
DatabaseOption = Annotated[str, typer.Option("--database", help="MongoDB database name.")]
CampaignArg = Annotated[str, typer.Argument(help="Campaign YAML file or campaign name.", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (for programs), no table.")]


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with :data:`EXIT_USER_ERROR`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn :class:`AsoError` into a one-line ``error: ...`` and exit code 2."""
    try:
        yield
    except AsoError as exc:
        fail(" ".join(str(exc).split()))
    except ValueError as exc:  # pydantic's ValidationError is one: a model validated outside load_config
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        from aso_workflows.config import validation_message

        fail(f"{exc.title}: {validation_message(exc)}")


def parse_settings(items: list[str] | None) -> dict:
    """``["qmax=20", "engine=pdffit2"]`` → ``{"qmax": 20, "engine": "pdffit2"}``.

    Values are read as YAML scalars/lists (numbers, booleans, ``[1, 2]``), falling back to the string.
    """
    import yaml

    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError("--setting", f"expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out


def clean_json(obj: Any) -> Any:
    """NaN/inf → None (JSON has no NaN), numpy scalars → Python, recursively."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def print_json(obj: Any) -> None:
    """One JSON document on stdout (NaN as null)."""
    sys.stdout.write(json.dumps(clean_json(obj), indent=1, default=str) + "\n")


def fmt(v: Any, spec: str = ".4g") -> str:
    """A number for a table: ``–`` for missing/NaN, ``spec`` for floats."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec) if isinstance(v, float) else str(v)


def console() -> Any:
    """A rich Console: the terminal's width, or 160 columns when the output is a pipe or a file."""
    from rich.console import Console

    # a terminal gets its own width; a pipe or file gets wide tables instead of rich's 80 columns
    return Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)


def open_campaign(campaign: str, store: str | None, database: str) -> Any:
    """The :class:`~aso_workflows.results.Campaign` named by a YAML file or a name (and store)."""
    from aso_workflows.locate import resolve_campaign
    from aso_workflows.results import Campaign

    ref = resolve_campaign(campaign, store, database)
    return Campaign.open(ref.name, ref.spec)


def write_campaign_outputs(state: Any, cfg: Any) -> None:
    """The outputs ``aso run``/``submit``/``resume`` leave in the campaign's folder: best CIFs,
    ``history.csv``, ``report.png``/``report.html`` (:func:`aso_workflows.report.write_outputs`)."""
    from aso_workflows.report import write_outputs

    write_outputs(state, cfg.output_dir.resolve())


def run_summary(state: Any, cfg: Any) -> None:
    """The end-of-run table of ``aso run``/``submit``/``resume``: simulations, start and best mismatch."""
    from rich.console import Console
    from rich.table import Table

    best = state.best(1)
    start = next((e for e in state.evaluations() if e.get("kind") == "start"), None)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("campaign", f"{state.name} ({state.doc.get('status')}: {state.doc.get('stop_reason', '')})")
    table.add_row(
        "simulations", f"{state.n_used()} / {cfg.budget} ({len(state.evaluations('failed'))} failed)"
    )
    if start is not None:
        table.add_row("start mismatch", f"{start['objective']:.4g}")
    if best:
        b = best[0]
        table.add_row(
            "best mismatch", f"{b['objective']:.4g} (iteration {b['iteration']}, candidate {b['candidate']})"
        )
    out = cfg.output_dir.resolve()
    table.add_row("outputs", f"{out}/best_01.cif, history.csv, report.png, report.html")
    Console().print(table)


def warn_inline_passwords(uris: dict[str, str | None]) -> None:
    """One stderr line per URI whose password would be copied into every Firework (never the password)."""
    from aso_workflows.store import redact_uri

    for where, uri in uris.items():
        if uri and redact_uri(uri) != uri:
            typer.echo(
                f"warning: the password in {where} is copied into every Firework and FW.json; "
                "put it in a password file instead (docs/security.md)",
                err=True,
            )


def warn_queue_misfits(queues: dict[str, Any]) -> list[str]:
    """One stderr line per way a queue's jobs cannot start on its partition (``sinfo``); the lines."""
    from aso_workflows.cluster.queues import load_queue_adapter, queue_misfits

    lines = []
    for category, q in queues.items():
        is_file = isinstance(q, str | os.PathLike)
        qa = load_queue_adapter(str(q)) if is_file else q
        where = str(q) if is_file else f"the {category} queue"
        for why in queue_misfits(qa):
            lines.append(f"warning: {where}: {why}; its jobs would wait in Slurm for ever (PartitionConfig)")
    for line in lines:
        typer.echo(line, err=True)
    return lines
