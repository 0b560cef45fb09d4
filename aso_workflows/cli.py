"""The ``aso`` command line: the entry point only.

Each command is a module of :mod:`aso_workflows.commands` that imports what it needs inside the command
(pymatgen, torch, FEFF ... are slow to import), so ``aso --help`` stays fast. Shared options, one-line
errors and output helpers are in :mod:`aso_workflows.commands.common`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from aso_workflows.commands import report, results, resume, run, simulate, status, submit, webgui
from aso_workflows.commands.common import EXIT_USER_ERROR, parse_settings

__all__ = ["app", "parse_settings", "EXIT_USER_ERROR"]

app = typer.Typer(
    name="aso",
    help=(
        "Determine atomic structure from spectroscopy (X-ray PDF, EXAFS, XANES) by active learning "
        "with a graph-neural-network surrogate ensemble (a re-implementation of ActiveStructOpt).\n\n"
        "Examples:\n\n"
        "  aso simulate LiNiO2.cif --technique pdf --plot pdf.png\n\n"
        "  aso run examples/linio2_jt_pdf/campaign.yaml\n\n"
        "  aso status linio2-jt-pdf"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """aso-workflows command line."""
    if version:
        from aso_workflows import __version__

        typer.echo(f"aso-workflows {__version__}")
        raise typer.Exit(0)


app.command()(simulate.simulate)
app.command(cls=run.RunCommand)(run.run)
app.command()(submit.submit)
app.command()(status.status)
app.add_typer(results.app, name="results")
app.command()(report.report)
app.command()(resume.resume)
app.command()(webgui.webgui)

if __name__ == "__main__":  # pragma: no cover
    app()
