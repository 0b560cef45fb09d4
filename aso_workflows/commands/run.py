"""``aso run CAMPAIGN.yaml``: a whole campaign on this machine (embedded store, no server, no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from aso_workflows.commands.common import guard, run_summary, write_campaign_outputs

__all__ = ["run", "RunCommand", "optimizers_help"]


def optimizers_help() -> str:
    """The ``--optimizer`` help: each registered optimiser's name and docstring summary."""
    from aso_workflows.optimizers.registry import optimizer_summaries

    listed = "; ".join(f"{name}: {summary}" for name, summary in optimizer_summaries().items())
    return f"Override the optimizer (docs/baselines.md). {listed}"


class RunCommand(TyperCommand):
    """``aso run``'s command, whose ``--optimizer`` help is built from the optimiser registry when the
    help is shown: the registry imports every optimiser module (pymatgen, about a second), too slow for
    every ``aso`` call."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.params:
            if param.name == "optimizer" and hasattr(param, "help"):
                text = optimizers_help()
                if self.rich_markup_mode == "rich":
                    from rich.markup import escape

                    text = escape(text)
                param.help = text
        super().format_help(ctx, formatter)


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
            help="Override the optimizer (the registered ones: aso run --help; docs/baselines.md).",
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
        from aso_workflows.config import ConfigOverrides, load_config

        overrides = ConfigOverrides(output=output, budget=budget, seed=seed, optimizer=optimizer, name=name)
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
