"""``aso report CAMPAIGN``: the self-contained report.html with its figures, best CIFs and history.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aso_workflows.commands.common import (
    CampaignArg,
    DatabaseOption,
    JsonOption,
    StoreOption,
    guard,
    print_json,
)
from aso_workflows.errors import InputError

__all__ = ["report"]


def report(
    campaign: CampaignArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for report.html, the PNGs, best CIFs and history.csv (default: the campaign file's output, else runs/<name>).",
        ),
    ] = None,
    n: Annotated[
        int, typer.Option("-n", "--number", help="Best structures in the table (and CIF files).", min=1)
    ] = 5,
    store: StoreOption = None,
    database: DatabaseOption = "aso",
    as_json: JsonOption = False,
) -> None:
    """Write the campaign report: a self-contained report.html (figures embedded) and the PNGs beside it.

    Best mismatch vs simulations, target vs start vs best spectra per technique, neighbour-distance and
    bond-angle histograms, surrogate accuracy per iteration (predicted vs simulated mismatch) and a table
    of the best structures (and of failed evaluations, if any).
    """
    with guard():
        from aso_workflows.locate import resolve_campaign
        from aso_workflows.results import Campaign

        ref = resolve_campaign(campaign, store, database)

        c = Campaign.open(ref.name, ref.spec)
        out = output or (ref.config.output_dir if ref.config is not None else Path("runs") / ref.name)
        try:
            paths = c.write_report(out, n_best=n)
        except OSError as exc:
            raise InputError(out, f"cannot write the report ({exc.strerror or exc})") from None
        if "report_html" not in paths:
            raise InputError(
                "CAMPAIGN", f"campaign {c.name!r} has no completed evaluation yet: nothing to report"
            )
    if as_json:
        print_json({k: str(v.resolve()) for k, v in paths.items()})
        return
    html = paths["report_html"].resolve()
    pngs = sorted(p.name for k, p in paths.items() if k.endswith("png"))
    typer.echo(f"report: {html}\nfigures: {', '.join(pngs)} (in {html.parent})\nopen file://{html}")
