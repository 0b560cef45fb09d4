"""``aso status [CAMPAIGN]``: where a campaign stands (or one line per campaign in a store)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aso_workflows.commands.common import (
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
from aso_workflows.locate import store_spec_from

if TYPE_CHECKING:
    from fireworks import LaunchPad

    from aso_workflows.results import CampaignSummary

__all__ = ["status", "fireworks_counts"]

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


def fireworks_counts(lp: LaunchPad, campaign: str) -> dict:
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
    with guard():
        if campaign is None:
            rows = _list_all(store, database)
        else:
            c = open_campaign(campaign, store, database)
            summary = c.summary()
            if summary.controller.get("resume"):  # the command as this user typed the campaign
                summary.controller["resume"] = _resume_command(campaign, store, database)
            fireworks = None
            if launchpad is not None:
                from aso_workflows.cluster.launchpad import load_launchpad

                fireworks = fireworks_counts(load_launchpad(launchpad), c.name)
    if campaign is None:
        if as_json:
            print_json(rows)
        else:
            _campaigns_table(rows)
        return
    if as_json:
        out = summary.to_dict()
        if fireworks is not None:
            out["fireworks"] = fireworks
        print_json(out)
        return
    _status_tables(summary, fireworks)


def _resume_command(campaign: str, store: str | None, database: str) -> str:
    import shlex

    cmd = f"aso resume {shlex.quote(campaign)}"
    if store:
        cmd += f" --store {shlex.quote(store)}"
    if database != "aso":
        cmd += f" --database {shlex.quote(database)}"
    return cmd


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
            fmt(r.get("best_objective")),
            str(r.get("updated") or ""),
            r["store"],
        )
    console().print(table if rows else "no campaigns in the store")


def _status_tables(s: CampaignSummary, fireworks: dict | None) -> None:
    from rich.table import Table

    out = console()
    t = Table(show_header=False, box=None, pad_edge=False, title=f"campaign {s.name}", title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    t.add_row("status", s.status + (f" ({s.stop_reason})" if s.stop_reason else ""))
    t.add_row("controller", _controller_line(s.controller))
    t.add_row("optimizer", s.optimizer)
    t.add_row("iteration", str(s.iteration))
    t.add_row("simulations", f"{s.n_used} / {s.budget} used, {s.n_failed} failed, {len(s.pending)} pending")
    if s.completed_by_kind:
        t.add_row("by kind", ", ".join(f"{k} {n}" for k, n in s.completed_by_kind.items()))
    if s.failures_by_kind:
        t.add_row("failures by kind", ", ".join(f"{k} {n}" for k, n in s.failures_by_kind.items()))
    t.add_row("start mismatch", fmt(s.start_objective))
    best = fmt(s.best_objective)
    if s.best_ref:
        best += f" (candidate {s.best_ref})"
    if s.start_objective and s.best_objective:
        ratio = s.start_objective / s.best_objective
        best += f", {ratio:.1f}× lower than the start" if ratio > 1.0001 else ", no better than the start yet"
    t.add_row("best mismatch", best)
    for tech, g in s.best_goodness.items():  # Rw / R of the best candidate, and of the start
        start_g = s.start_goodness.get(tech)
        t.add_row(
            f"best {g['name']} ({tech})",
            fmt(g["value"]) + (f" (start {fmt(start_g['value'])})" if start_g else ""),
        )
    t.add_row("surrogate models", str(s.n_models))
    t.add_row("store", s.store)
    t.add_row("updated", str(s.updated or ""))
    out.print(t)
    if s.controller.get("resume"):  # one line, never folded: to copy and paste
        typer.echo(f"to continue: {s.controller['resume']}")
    if s.failures:
        f = Table(title=f"failed evaluations ({len(s.failures)})", title_justify="left")
        for col in ("candidate", "status", "kind", "reason", "host", "slurm job"):
            f.add_column(col, overflow="fold")
        for r in s.failures:
            reason = r["error"] or "(no reason recorded)"
            f.add_row(r["ref"], r["status"], r["failure_kind"], reason, r["host"], r["slurm_job_id"])
        out.print(f)
    if s.pending:
        p = Table(
            title=f"pending candidates ({len(s.pending)}: proposed, not evaluated yet)", title_justify="left"
        )
        for col in ("candidate", "kind", "proposed"):
            p.add_column(col)
        for r in s.pending:
            p.add_row(r["ref"], str(r.get("kind") or ""), str(r.get("created") or ""))
        out.print(p)
    if s.slurm_jobs:
        _slurm_table(s.slurm_jobs)
    if fireworks is not None:
        w = Table(title=f"FireWorks ({fireworks['workflows']} workflow(s))", title_justify="left")
        for state in fireworks["states"]:
            w.add_column(state, justify="right")
        w.add_row(*[str(n) for n in fireworks["states"].values()])
        out.print(w if fireworks["states"] else "FireWorks: no workflow of this campaign on the LaunchPad")
        for fw in fireworks["fireworks"]:
            out.print(f"  {fw['state']:<9} fw_id {fw['fw_id']}: {fw['name']}")


def _controller_line(c: dict) -> str:
    if c.get("running"):
        return f"running: pid {c['pid']} on {c['host']}, since {c['since']} (lease renewed {c['renewed']})"
    if c.get("executor") == "online":
        return str(c.get("reason", ""))
    return f"not running: {c.get('reason', '')}"


def _slurm_table(jobs: list[dict]) -> None:
    from rich.table import Table

    out = console()
    t = Table(title=f"Slurm jobs ({len(jobs)}: queued or running)", title_justify="left")
    for col in ("job", "state", "reason", "waiting", "partition", "firework"):
        t.add_column(col, overflow="fold")
    for j in jobs:
        reason = j["reason"] + (f": {j['hint']}" if j.get("hint") else "")
        waiting = f"{j['waiting_s']:.0f} s" if j.get("waiting_s") is not None else ""
        t.add_row(j["job_id"], j["state"], reason, waiting, j["partition"], j.get("firework") or j["name"])
    out.print(t)
    for j in jobs:
        if j.get("blocked"):
            out.print(
                f"[bold red]Slurm job {j['job_id']} cannot start[/] ({j['reason']}: {j['hint']}); "
                f"fix the queue file (docs/cluster.md) and scancel {j['job_id']}, or it waits forever"
            )
