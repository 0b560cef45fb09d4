"""``aso status``, ``aso results best|history|spectra`` and ``aso report``: the science view of a campaign.

Every command reads the campaign store (embedded folder, MongoDB URI or ``mongomock://``, see
:mod:`aso_workflows.commands.common`) through :class:`aso_workflows.results.Campaign`, prints rich tables
for people and, with ``--json``, one JSON document on stdout for programs.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from aso_workflows.cli import _guard, app, save_figure
from aso_workflows.commands.common import DatabaseOption, StoreOption, resolve_campaign, store_spec_from
from aso_workflows.errors import InputError

__all__ = ["status", "results_app", "report", "fireworks_counts"]

results_app = typer.Typer(
    name="results",
    help="Query a campaign's results: best structures, the history of evaluations, spectra of a candidate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(results_app, name="results")

CampaignArg = Annotated[str, typer.Argument(help="Campaign YAML file or campaign name.", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (for programs), no table.")]
FW_STATES = (
    "RUNNING",
    "RESERVED",
    "READY",
    "WAITING",
    "FIZZLED",
    "COMPLETED",
    "DEFUSED",
    "PAUSED",
    "ARCHIVED",
)


# ---- helpers -------------------------------------------------------------------------------------------
def _clean(obj):
    """NaN/inf → None (JSON has no NaN), numpy scalars → Python, recursively."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            pass
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(_clean(obj), indent=1, default=str) + "\n")


def _g(v, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec) if isinstance(v, float) else str(v)


def _console():
    from rich.console import Console

    # a terminal gets its own width; a pipe or file gets wide tables instead of rich's 80 columns
    return Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)


def _open(campaign: str, store: str | None, database: str):
    from aso_workflows.results import Campaign

    ref = resolve_campaign(campaign, store, database)
    return Campaign.open(ref.name, ref.spec)


def fireworks_counts(lp, campaign: str) -> dict:
    """Fireworks of ``campaign``'s workflows on a LaunchPad, counted by state, with the fizzled ones named.

    The campaign's workflows are those named ``campaign`` or ``campaign (…)`` / ``campaign / …`` (how
    ``aso submit`` names them).
    """
    pattern = f"^{re.escape(campaign)}($| )"
    fw_ids: list[int] = []
    states: dict[str, int] = {}
    n_wf = 0
    for wf in lp.workflows.find({"name": {"$regex": pattern}}, {"fw_states": 1, "nodes": 1}):
        n_wf += 1
        for fw_id, state in (wf.get("fw_states") or {}).items():
            states[state] = states.get(state, 0) + 1
            fw_ids.append(int(fw_id))
    attention = []
    if fw_ids:
        for fw in lp.fireworks.find(
            {"fw_id": {"$in": fw_ids}, "state": {"$in": ["FIZZLED", "RUNNING", "RESERVED"]}},
            {"fw_id": 1, "name": 1, "state": 1},
        ):
            attention.append({"fw_id": fw["fw_id"], "name": fw.get("name", ""), "state": fw["state"]})
    attention.sort(key=lambda d: (d["state"], d["fw_id"]))
    ordered = {s: states[s] for s in FW_STATES if s in states}
    ordered.update({s: n for s, n in states.items() if s not in ordered})
    return {"workflows": n_wf, "states": ordered, "fireworks": attention}


# ---- aso status ----------------------------------------------------------------------------------------
@app.command()
def status(
    campaign: Annotated[
        str | None,
        typer.Argument(
            help="Campaign YAML file or name; leave out to list the campaigns in the store(s).",
            show_default=False,
        ),
    ] = None,
    store: StoreOption = None,
    database: DatabaseOption = "aso",
    launchpad: Annotated[
        str | None,
        typer.Option(
            "--launchpad",
            "-l",
            help="Also count the campaign's Fireworks by state: my_launchpad.yaml or a mongodb:// URI.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Where a campaign stands: iteration, simulations used / budget, best and start mismatch, failed
    evaluations with their reasons, candidates still pending (queued or running), why it stopped.

    Without CAMPAIGN: one line per campaign in the store given by --store / $ASO_STORE, or in every
    runs/*/store folder here.
    """
    with _guard():
        if campaign is None:
            rows = _list_all(store, database)
        else:
            c = _open(campaign, store, database)
            summary = c.summary()
            fireworks = None
            if launchpad is not None:
                from aso_workflows.cluster.launchpad import load_launchpad

                fireworks = fireworks_counts(load_launchpad(launchpad), c.name)
    if campaign is None:
        if as_json:
            _print_json(rows)
        else:
            _campaigns_table(rows)
        return
    if as_json:
        out = summary.to_dict()
        if fireworks is not None:
            out["fireworks"] = fireworks
        _print_json(out)
        return
    _status_tables(summary, fireworks)


def _list_all(store: str | None, database: str) -> list[dict]:
    from aso_workflows.results import list_campaigns, open_db

    store = store or os.environ.get("ASO_STORE") or None
    specs = [store_spec_from(store, database)] if store else []
    if not specs:
        specs = [
            store_spec_from(str(p), database) for p in sorted(Path("runs").glob("*/store")) if p.is_dir()
        ]
    if not specs:
        raise InputError(
            "--store",
            "no store given and no runs/*/store folder here; give --store URI|FOLDER or set ASO_STORE",
        )
    rows = []
    for spec in specs:
        db = open_db(spec)
        for r in list_campaigns(db):
            r["store"] = db.spec.redacted()
            rows.append(r)
    return rows


def _campaigns_table(rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="campaigns", title_justify="left")
    for col in ("campaign", "status", "optimizer", "simulations", "best mismatch", "updated", "store"):
        table.add_column(col, justify="right" if col in ("simulations", "best mismatch") else "left")
    for r in rows:
        status = r["status"] or ""
        if r.get("stop_reason"):
            status += f" ({r['stop_reason']})"
        table.add_row(
            r["name"],
            status,
            r.get("optimizer") or "",
            f"{r['n_used']} / {r['budget']}",
            _g(r.get("best_objective")),
            str(r.get("updated") or ""),
            r["store"],
        )
    _console().print(table if rows else "no campaigns in the store")


def _status_tables(s, fireworks: dict | None) -> None:
    from rich.table import Table

    console = _console()
    t = Table(show_header=False, box=None, pad_edge=False, title=f"campaign {s.name}", title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("status", s.status + (f" ({s.stop_reason})" if s.stop_reason else ""))
    t.add_row("optimizer", s.optimizer)
    t.add_row("iteration", str(s.iteration))
    t.add_row("simulations", f"{s.n_used} / {s.budget} used, {s.n_failed} failed, {len(s.pending)} pending")
    if s.failures_by_kind:
        t.add_row("failures by kind", ", ".join(f"{k} {n}" for k, n in s.failures_by_kind.items()))
    t.add_row("start mismatch", _g(s.start_objective))
    best = _g(s.best_objective)
    if s.best_ref:
        best += f" (candidate {s.best_ref})"
    if s.start_objective and s.best_objective:
        ratio = s.start_objective / s.best_objective
        best += f", {ratio:.1f}× lower than the start" if ratio > 1.0001 else ", no better than the start yet"
    t.add_row("best mismatch", best)
    t.add_row("surrogate models", str(s.n_models))
    t.add_row("store", s.store)
    t.add_row("updated", str(s.updated or ""))
    console.print(t)
    if s.failures:
        f = Table(title=f"failed evaluations ({len(s.failures)})", title_justify="left")
        for col in ("candidate", "status", "kind", "reason", "host", "slurm job"):
            f.add_column(col, overflow="fold")
        for r in s.failures:
            reason = r["error"] or "(no reason recorded)"
            f.add_row(r["ref"], r["status"], r["failure_kind"], reason, r["host"], r["slurm_job_id"])
        console.print(f)
    if s.pending:
        p = Table(
            title=f"pending candidates ({len(s.pending)}: proposed, not evaluated yet)", title_justify="left"
        )
        for col in ("candidate", "kind", "proposed"):
            p.add_column(col)
        for r in s.pending:
            p.add_row(r["ref"], str(r.get("kind") or ""), str(r.get("created") or ""))
        console.print(p)
    if fireworks is not None:
        w = Table(title=f"FireWorks ({fireworks['workflows']} workflow(s))", title_justify="left")
        for state in fireworks["states"]:
            w.add_column(state, justify="right")
        w.add_row(*[str(n) for n in fireworks["states"].values()])
        console.print(
            w if fireworks["states"] else "FireWorks: no workflow of this campaign on the LaunchPad"
        )
        for fw in fireworks["fireworks"]:
            console.print(f"  {fw['state']:<9} fw_id {fw['fw_id']}: {fw['name']}")


# ---- aso results ---------------------------------------------------------------------------------------
@results_app.command("best")
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
    with _guard():
        c = _open(campaign, store, database)
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
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{c.name}: best {len(best)} of {c.summary().n_used} simulated", title_justify="left")
    for col in [
        "rank",
        "candidate",
        "kind",
        "objective",
        *[f"MSE {t}" for t in c.techniques],
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
            _g(b.objective),
            *[_g(b.mse.get(t)) for t in c.techniques],
            _g(b.predicted_objective),
            f"{b.structure.composition.reduced_formula} ({len(b.structure)} atoms)",
            b.fingerprint,
        )
    console = _console()
    console.print(table)
    if files:
        console.print(f"CIF files in {cif}")


@results_app.command("history")
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
    with _guard():
        c = _open(campaign, store, database)
        df = c.history()
        if csv is not None:
            try:
                csv.parent.mkdir(parents=True, exist_ok=True)
                df.to_csv(csv, index=False)
            except OSError as exc:
                raise InputError(csv, f"cannot write the CSV file ({exc.strerror or exc})") from None
    shown = df.tail(last) if last else df
    if as_json:
        _print_json(json.loads(shown.to_json(orient="records")))
        return
    from rich.table import Table

    table = Table(title=f"{c.name}: {len(df)} evaluations", title_justify="left")
    cols = ["#", "candidate", "kind", "status", "objective", "best so far", "predicted"]
    cols += [f"MSE {t}" for t in c.techniques] + ["error"]
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
            _g(r["objective"]),
            _g(r["best_objective"]),
            _g(r["predicted_objective"]),
            *[_g(r.get(f"mse_{t}")) for t in c.techniques],
            str(r.get("error") or ""),
        )
    console = _console()
    console.print(table)
    if csv is not None:
        console.print(f"history written to {csv}")


@results_app.command("spectra")
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
    import numpy as np

    with _guard():
        c = _open(campaign, store, database)
        cand = c.candidate(candidate)
        techs = [c._technique(technique)] if technique else c.techniques
        spectra = c.spectra(cand)
        targets = {t: c.target(t) for t in techs}
        written = []
        if csv is not None:
            for t in techs:
                path = csv if len(techs) == 1 else csv.with_name(f"{csv.stem}_{t}{csv.suffix or '.csv'}")
                s, tgt = spectra[t], targets[t]
                header = f"{tgt.grid.name} ({tgt.grid.unit}),target,candidate {cand.ref}"
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.savetxt(
                        path, np.column_stack([s.x, tgt.y, s.y]), delimiter=",", header=header, comments=""
                    )
                except OSError as exc:
                    raise InputError(path, f"cannot write the CSV file ({exc.strerror or exc})") from None
                written.append(str(path))
        if plot is not None:
            _plot_spectra(c, cand, {t: spectra[t] for t in techs}, targets, plot)
            written.append(str(plot))
    if as_json:
        _print_json(
            {
                "candidate": cand.to_dict(),
                "spectra": {t: spectra[t].model_dump(mode="json") for t in techs},
                "targets": {t: targets[t].model_dump(mode="json") for t in techs},
                "files": written,
            }
        )
        return
    from rich.table import Table

    from aso_workflows.cli import _peaks

    table = Table(
        title=f"{c.name}: candidate {cand.ref} ({cand.kind}), mismatch {_g(cand.objective)}",
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
    for t in techs:
        s, tgt = spectra[t], targets[t]
        unit = s.grid.unit
        table.add_row(
            t,
            s.engine or "?",
            f"{s.grid.name} = {s.x[0]:g} … {s.x[-1]:g} {unit}",
            str(len(s.x)),
            _g(cand.mse.get(t)),
            ", ".join(f"{p:.3f}" for p in _peaks(s.x, s.y)),
            ", ".join(f"{p:.3f}" for p in _peaks(tgt.x, tgt.y)),
        )
    console = _console()
    console.print(table)
    for w in written:
        console.print(f"wrote {w}")


def _plot_spectra(c, cand, spectra: dict, targets: dict, path: Path) -> None:
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
        ax.set_title(f"{c.name} {t.upper()}: MSE {_g(cand.mse.get(t))}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


# ---- aso report ----------------------------------------------------------------------------------------
@app.command()
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
    with _guard():
        ref = resolve_campaign(campaign, store, database)
        from aso_workflows.results import Campaign

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
        _print_json({k: str(v.resolve()) for k, v in paths.items()})
        return
    html = paths["report_html"].resolve()
    pngs = sorted(p.name for k, p in paths.items() if k.endswith("png"))
    typer.echo(f"report: {html}\nfigures: {', '.join(pngs)} (in {html.parent})\nopen file://{html}")
