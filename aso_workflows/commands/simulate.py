"""``aso simulate STRUCTURE --technique pdf|exafs|xanes|...``: one spectrum of a structure with the real code.

The techniques, their axis labels, extra panels and summary rows come from the technique registry
(:mod:`aso_workflows.spectra.techniques`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aso_workflows.commands.common import guard, parse_settings
from aso_workflows.errors import InputError
from aso_workflows.plotting import save_figure
from aso_workflows.spectra.techniques import get_technique, load_ref, technique_entries, technique_names

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from aso_workflows.spectra.spectrum import Spectrum

__all__ = ["simulate"]

_TECHNIQUES_HELP = ", ".join(technique_names()[:-1]) + f" or {technique_names()[-1]}"
_ABSORBER_TECHNIQUES = "/".join(e.name for e in technique_entries() if e.absorber)


def _plot(spectrum: Spectrum, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entry = get_technique(spectrum.technique)
    panels = [
        p
        for p in entry.panels
        if spectrum.extra.get(p.x) and len(spectrum.extra[p.x]) == len(spectrum.extra.get(p.y) or ())
    ]
    n = 1 + len(panels)
    fig, axes = plt.subplots(1, n, figsize=(6 + 4 * (n - 1), 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(spectrum.x, spectrum.y, lw=1.2)
    ax.set_xlabel(entry.x_label(spectrum.grid.name, spectrum.grid.unit))
    ax.set_ylabel(entry.y_label)
    ax.set_title(title)
    ax.axhline(0, color="0.7", lw=0.6)
    for ax2, panel in zip(axes[0, 1:], panels, strict=True):
        ax2.plot(spectrum.extra[panel.x], spectrum.extra[panel.y], lw=1.2, color="C1")
        ax2.set_xlabel(panel.x_label)
        ax2.set_ylabel(panel.y_label)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def simulate(
    structure: Annotated[
        Path, typer.Argument(help="Structure file: CIF, POSCAR or pymatgen JSON.", show_default=False)
    ],
    technique: Annotated[
        str,
        typer.Option(
            "--technique", "-t", help=f"Spectrum to simulate: {_TECHNIQUES_HELP}.", show_default=False
        ),
    ],
    absorber: Annotated[
        str | None,
        typer.Option("--absorber", "-a", help=f"Absorbing element for {_ABSORBER_TECHNIQUES}, e.g. Ni."),
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--setting",
            "-s",
            help="Simulator setting key=value (repeatable), e.g. -s qmax=20 -s biso=1.0.",
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG plot of the spectrum here.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the Spectrum document as JSON on stdout (no summary).")
    ] = False,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Keep FEFF run directories here (exafs/xanes).")
    ] = None,
) -> None:
    """Simulate one spectrum of a structure with the real simulator (diffpy for PDF, FEFF for XAS).

    Prints a short summary (technique, engine, grid, peak positions), or with --json the Spectrum
    document. Unknown settings are refused with the list of accepted ones.
    """
    import time

    with guard():
        from aso_workflows.spectra.registry import make_simulator
        from aso_workflows.structures import load_structure

        technique = technique.strip().lower()
        settings = parse_settings(setting)
        if get_technique(technique).absorber:
            if absorber is None and "absorber" not in settings:
                raise InputError("--absorber", f"required for {technique} (e.g. --absorber Ni)")
            if absorber is not None:
                settings["absorber"] = absorber
        elif absorber is not None:
            raise InputError("--absorber", f"only applies to {_ABSORBER_TECHNIQUES}, not {technique!r}")
        sim = make_simulator(technique, **settings)
        struct = load_structure(structure)
        t0 = time.perf_counter()
        spectrum = sim.simulate(struct, workdir=workdir)
        elapsed = time.perf_counter() - t0
        if plot is not None:
            _plot(spectrum, f"{struct.composition.reduced_formula} {technique.upper()}", plot)

    if as_json:
        sys.stdout.write(spectrum.model_dump_json() + "\n")
        return
    _summary(spectrum, struct, structure, elapsed, plot)


def _summary(spectrum: Spectrum, struct: Structure, path: Path, elapsed: float, plot: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from aso_workflows.spectra.analysis import peak_positions

    x = spectrum.x
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("structure", f"{path} ({struct.composition.reduced_formula}, {len(struct)} atoms)")
    technique = spectrum.technique
    if spectrum.absorber:
        technique += f" ({spectrum.absorber} {spectrum.edge or ''} edge)".replace("  ", " ")
    table.add_row("technique", technique)
    table.add_row("engine", spectrum.engine or "?")
    unit = spectrum.grid.unit
    table.add_row("grid", f"{spectrum.grid.name} = {x[0]:g} … {x[-1]:g} {unit}, {len(x)} points")
    peaks = peak_positions(x, spectrum.y)
    if peaks:
        table.add_row("peaks", ", ".join(f"{p:.3f}" for p in peaks) + f" {unit}")
    if spectrum.absorber_sites:
        table.add_row("absorber sites", f"{len(spectrum.absorber_sites)} averaged")
    summary = get_technique(spectrum.technique).summary
    for label, text in load_ref(summary)(spectrum) if summary is not None else ():
        table.add_row(label, text)
    table.add_row("time", f"{elapsed:.2f} s")
    if plot is not None:
        table.add_row("plot", str(plot))
    Console().print(table)
