"""``aso run CAMPAIGN.yaml``: a whole campaign on this machine (embedded store, no server, no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aso_workflows.commands.common import guard, run_summary, write_campaign_outputs

__all__ = ["run", "OPTIMIZERS_HELP"]

OPTIMIZERS_HELP = "aso, aso-refine, diffpy, gpbo, lsq, random or rmc"
"""The registered optimisers, for ``--help`` (spelled out: listing the registry would import every
optimiser module on every ``aso`` call; tests/test_cli_simulate.py checks it against the registry)."""


def run(
    campaign: Annotated[
        Path, typer.Argument(help="Campaign YAML file (see docs/campaign.md).", show_default=False)
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output folder (default: the file's `output:` or runs/<name>)."),
    ] = None,
    budget: Annotated[int | None, typer.Option("--budget", help="Override the simulation budget.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the campaign seed.")] = None,
    optimizer: Annotated[
        str | None,
        typer.Option(
            "--optimizer",
            help=f"Override the optimizer: {OPTIMIZERS_HELP} (docs/baselines.md).",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Override the campaign name.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a whole campaign on this machine (embedded store, no server, no cluster).

    Each iteration is a jobflow flow run with run_locally: simulate the candidates, retrain the surrogate
    ensemble, propose the next candidates. Running the same command again resumes: nothing already
    stored is simulated twice. Writes best CIFs, history.csv and report.png/html into the output folder.
    """
    with guard():
        from aso_workflows.campaign.local import LocalCampaignRunner
        from aso_workflows.config import load_config

        overrides: dict[str, object] = {
            k: v
            for k, v in {
                "output": output,
                "budget": budget,
                "seed": seed,
                "optimizer": optimizer,
                "name": name,
            }.items()
            if v is not None
        }
        if "output" in overrides:
            overrides["output"] = str(Path(str(overrides["output"])).resolve())
        cfg = load_config(campaign, overrides)
        runner = LocalCampaignRunner(progress=not quiet)
        state = runner.run(cfg)
        write_campaign_outputs(state, cfg)
    run_summary(state, cfg)
    if runner.errors:
        first = runner.errors[0]
        typer.echo(
            f"error: {len(runner.errors)} job(s) raised, first: {first.where} / {first.key}: {first.error} "
            f"(tracebacks in {cfg.output_dir.resolve() / 'errors.log'}); run the same command again to resume",
            err=True,
        )
        raise typer.Exit(1)
