"""``aso results best|history|spectra``: query a campaign's results (tables, ``--json``, CIF, CSV, plots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aso_workflows.commands.common import (
    CampaignArg,
    DatabaseOption,
    JsonOption,
    StoreOption,
    console,
    fmt,
    guard,
    open_campaign,
    print_json,
)
from aso_workflows.errors import InputError
from aso_workflows.plotting import save_figure

if TYPE_CHECKING:
    from rich.table import Table

    from aso_workflows.results import Campaign, Candidate

__all__ = ["app", "results_best", "results_fit", "results_history", "results_spectra"]

app = typer.Typer(
    name="results",
    help="Query a campaign's results: best structures, the history of evaluations, spectra of a candidate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("best")
def results_best(
    campaign: CampaignArg,
    n: Annotated[int, typer.Option("-n", "--number", help="How many structures.", min=1)] = 5,
    cif: Annotated[
        Path | None, typer.Option("--cif", help="Write best_01.cif, best_02.cif ... into this folder.")
    ] = None,
    structures: Annotated[
        bool, typer.Option("--structures", help="With --json: include each pymatgen structure.")
    ] = False,
    store: StoreOption = None,
    database: DatabaseOption = "aso",
    as_json: JsonOption = False,
) -> None:
    """The N best structures (lowest mismatch), with per-technique MSE and the surrogate's prediction."""
    with guard():
        c = open_campaign(campaign, store, database)
        best = c.best(n)
        files = {}
        if cif is not None:
            try:
                cif.mkdir(parents=True, exist_ok=True)
                for b in best:
                    path = cif / f"best_{b.rank:02d}.cif"
                    b.structure.to(filename=str(path))
                    files[b.id] = str(path)
            except OSError as exc:
                raise InputError(cif, f"cannot write CIF files ({exc.strerror or exc})") from None
    if as_json:
        rows = []
        for b in best:
            d = b.to_dict(structure=structures)
            if b.id in files:
                d["cif"] = files[b.id]
            rows.append(d)
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{c.name}: best {len(best)} of {c.summary().n_used} simulated", title_justify="left")
    for col in [
        "rank",
        "candidate",
        "kind",
        "objective",
        *[f"MSE {t}" for t in c.techniques],
        *[f"Rw/R {t}" for t in c.techniques],
        "predicted",
        "formula",
        "fingerprint",
    ]:
        table.add_column(col, justify="left" if col in ("kind", "formula", "fingerprint") else "right")
    for b in best:
        table.add_row(
            str(b.rank),
            b.ref,
            b.kind,
            fmt(b.objective),
            *[fmt(b.mse.get(t)) for t in c.techniques],
            *[fmt((b.goodness.get(t) or {}).get("value")) for t in c.techniques],
            fmt(b.predicted_objective),
            f"{b.structure.composition.reduced_formula} ({len(b.structure)} atoms)",
            b.fingerprint,
        )
    out = console()
    out.print(table)
    if files:
        out.print(f"CIF files in {cif}")


@app.command("history")
def results_history(
    campaign: CampaignArg,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write the whole history as CSV here.")] = None,
    last: Annotated[
        int | None, typer.Option("--last", help="Show only the last N evaluations.", min=1)
    ] = None,
    store: StoreOption = None,
    database: DatabaseOption = "aso",
    as_json: JsonOption = False,
) -> None:
    """One row per evaluation in order: mismatch, best so far, predicted mismatch, status and error."""
    with guard():
        c = open_campaign(campaign, store, database)
        df = c.history()
        if csv is not None:
            try:
                csv.parent.mkdir(parents=True, exist_ok=True)
                df.to_csv(csv, index=False)
            except OSError as exc:
                raise InputError(csv, f"cannot write the CSV file ({exc.strerror or exc})") from None
    shown = df.tail(last) if last else df
    if as_json:
        print_json(json.loads(shown.to_json(orient="records")))
        return
    from rich.table import Table

    table = Table(title=f"{c.name}: {len(df)} evaluations", title_justify="left")
    cols = ["#", "candidate", "kind", "status", "objective", "best so far", "predicted"]
    cols += [f"MSE {t}" for t in c.techniques]
    good = [k for k in shown.columns if k.split("_")[0] in ("Rw", "R") and k.count("_") == 1]
    cols += [k.replace("_", " ") for k in good] + ["error"]
    for col in cols:
        table.add_column(
            col, justify="left" if col in ("kind", "status", "error") else "right", overflow="fold"
        )
    for r in shown.to_dict(orient="records"):
        table.add_row(
            str(r["n_simulations"]),
            f"{r['iteration']}:{r['candidate']}",
            str(r["kind"] or ""),
            r["status"],
            fmt(r["objective"]),
            fmt(r["best_objective"]),
            fmt(r["predicted_objective"]),
            *[fmt(r.get(f"mse_{t}")) for t in c.techniques],
            *[fmt(r.get(k)) for k in good],
            str(r.get("error") or ""),
        )
    out = console()
    out.print(table)
    if csv is not None:
        out.print(f"history written to {csv}")


@app.command("spectra")
def results_spectra(
    campaign: CampaignArg,
    candidate: Annotated[
        str,
        typer.Option(
            "--candidate",
            "-c",
            help="start, best, best:N, ITERATION:CANDIDATE (e.g. 3:1, as `aso results best` shows) or an evaluation id.",
        ),
    ] = "best",
    technique: Annotated[str | None, typer.Option("--technique", "-t", help="Only this technique.")] = None,
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Write x, target, candidate columns here (one file per technique: NAME_<technique>.csv when several).",
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write a PNG of target vs candidate here.")
    ] = None,
    store: StoreOption = None,
    database: DatabaseOption = "aso",
    as_json: JsonOption = False,
) -> None:
    """Simulated spectra of one candidate next to the campaign's targets."""
    with guard():
        c = open_campaign(campaign, store, database)
        cand = c.candidate(candidate)
        techs = [c._technique(technique)] if technique else c.techniques
        all_spectra = c.spectra(cand)
        spectra = {t: all_spectra[t] for t in techs}
        targets = {t: c.target(t) for t in techs}
        written = _write_csv(csv, cand, spectra, targets) if csv is not None else []
        if plot is not None:
            _plot_spectra(c, cand, spectra, targets, plot)
            written.append(str(plot))
    if as_json:
        print_json(
            {
                "candidate": cand.to_dict(),
                "spectra": {t: s.model_dump(mode="json") for t, s in spectra.items()},
                "targets": {t: s.model_dump(mode="json") for t, s in targets.items()},
                "files": written,
            }
        )
        return
    out = console()
    out.print(_spectra_table(c, cand, spectra, targets))
    for w in written:
        out.print(f"wrote {w}")


def _write_csv(csv: Path, cand: Candidate, spectra: dict, targets: dict) -> list[str]:
    """x, target, candidate columns per technique to ``csv`` (``NAME_<technique>.csv`` when several);
    the paths written."""
    import numpy as np

    written = []
    for t, s in spectra.items():
        path = csv if len(spectra) == 1 else csv.with_name(f"{csv.stem}_{t}{csv.suffix or '.csv'}")
        tgt = targets[t]
        header = f"{tgt.grid.name} ({tgt.grid.unit}),target,candidate {cand.ref}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savetxt(path, np.column_stack([s.x, tgt.y, s.y]), delimiter=",", header=header, comments="")
        except OSError as exc:
            raise InputError(path, f"cannot write the CSV file ({exc.strerror or exc})") from None
        written.append(str(path))
    return written


def _spectra_table(c: Campaign, cand: Candidate, spectra: dict, targets: dict) -> Table:
    """One row per technique: engine, grid, points, MSE vs target and the peaks of both."""
    from rich.table import Table

    from aso_workflows.spectra.analysis import peak_positions

    table = Table(
        title=f"{c.name}: candidate {cand.ref} ({cand.kind}), mismatch {fmt(cand.objective)}",
        title_justify="left",
    )
    for col in (
        "technique",
        "engine",
        "grid",
        "points",
        "MSE vs target",
        "peaks (candidate)",
        "peaks (target)",
    ):
        table.add_column(col, justify="right" if col in ("points", "MSE vs target") else "left")
    for t, s in spectra.items():
        tgt = targets[t]
        unit = s.grid.unit
        table.add_row(
            t,
            s.engine or "?",
            f"{s.grid.name} = {s.x[0]:g} … {s.x[-1]:g} {unit}",
            str(len(s.x)),
            fmt(cand.mse.get(t)),
            ", ".join(f"{p:.3f}" for p in peak_positions(s.x, s.y)),
            ", ".join(f"{p:.3f}" for p in peak_positions(tgt.x, tgt.y)),
        )
    return table


@app.command("fit")
def results_fit(
    campaign: CampaignArg,
    candidate: Annotated[
        str,
        typer.Option(
            "--candidate", "-c", help="start, best, best:N, ITERATION:CANDIDATE or an evaluation id."
        ),
    ] = "best",
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write PDFgui's fit plot (data, model, difference, fit range) here."),
    ] = None,
    store: StoreOption = None,
    database: DatabaseOption = "aso",
    as_json: JsonOption = False,
) -> None:
    """A candidate's PDF fit: Rw, refined parameters with uncertainties and bounds, bonds beside the start's."""
    with guard():
        c = open_campaign(campaign, store, database)
        view = c.pdf_fit(candidate)
        if plot is not None:
            from aso_workflows.report.pdf_fit import plot_pdf_fit

            try:
                plot.parent.mkdir(parents=True, exist_ok=True)
                plot_pdf_fit(view, plot)
            except OSError as exc:
                raise InputError(plot, f"cannot write the plot ({exc.strerror or exc})") from None
    if as_json:
        print_json({k: v for k, v in view.items() if k not in ("r", "data", "model", "difference")})
        return
    from rich.table import Table

    from aso_workflows.report.pdf_fit import bond_rows, parameter_rows

    out = console()
    lo, hi = view["fit_range"]
    out.print(
        f"{c.name}: candidate {view['candidate']} ({view['kind']}), Rw {fmt(view['rw'])} over {lo:g}–{hi:g} Å"
    )
    params = Table(title="refined parameters (uncertainties from the fit's covariance)", title_justify="left")
    for col in ("parameter", "value", "bounds", ""):
        params.add_column(col, justify="left")
    for row in parameter_rows(view):
        params.add_row(*row)
    out.print(params)
    bonds = Table(title="bonds beside the start's", title_justify="left")
    for col in ("pair", "bonds", "start (Å)", "best (Å)", "angles start", "angles best", "check"):
        bonds.add_column(col, justify="left")
    for row in bond_rows(view):
        bonds.add_row(*row)
    out.print(bonds)
    if plot is not None:
        out.print(f"wrote {plot}")


def _plot_spectra(c: Campaign, cand: Candidate, spectra: dict, targets: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(spectra)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4), squeeze=False)
    for ax, (t, s) in zip(axes[0], spectra.items(), strict=True):
        tgt = targets[t]
        ax.plot(tgt.x, tgt.y, "k-", lw=1.5, label="target")
        ax.plot(s.x, s.y, "C0-", lw=1, label=f"candidate {cand.ref}")
        ax.set_xlabel(f"{tgt.grid.name} ({tgt.grid.unit})")
        ax.set_title(f"{c.name} {t.upper()}: MSE {fmt(cand.mse.get(t))}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
