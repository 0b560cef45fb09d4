"""The campaign page of the web GUI: what ``aso report`` and ``aso status`` show, read live from the store.

``aso webgui`` serves it at ``/aso/campaign/<name>`` next to FireWorks' own pages; each workflow page
of a campaign (and each Firework page) links to it. It shows the summary (status, simulations used /
budget, start and best mismatch), the best mismatch against the number of simulations, the target, start
and best spectra, the failed evaluations with their reasons and the candidates still pending, and
reloads itself every :data:`REFRESH_S` seconds while the campaign runs.

Nothing is copied from the report: the numbers come from :class:`aso_workflows.results.Campaign`
(``summary()``: failures, pending), the figures from :class:`aso_workflows.report.figures.ReportFigures`
and the tables from :mod:`aso_workflows.report.html`.

The campaign store is found from the LaunchPad: every job of a campaign carries the store's spec as its
first argument (a URI without password, or the embedded store's folder; a password stays in its
``password_file``), so the page needs no option of its own.
"""

from __future__ import annotations

import base64
import html
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aso_workflows.errors import AsoError, InputError

if TYPE_CHECKING:
    from fireworks import LaunchPad

    from aso_workflows.results import Campaign, CampaignSummary

__all__ = ["REFRESH_S", "campaign_store_spec", "campaign_page", "campaign_url"]

REFRESH_S = 20
"""Seconds between reloads of a running campaign's page."""

_CACHE: dict[str, tuple[tuple, str]] = {}
_LOCK = threading.Lock()


def campaign_url(name: str) -> str:
    return f"/aso/campaign/{quote(name, safe='')}"


def campaign_store_spec(lp: LaunchPad, name: str) -> dict:
    """The campaign store of campaign ``name``, from the first argument of one of its jobs in ``lp``.

    Raises
    ------
    InputError
        No Firework of that campaign in the LaunchPad, or its jobs carry no store spec.
    """
    fw = lp.fireworks.find_one({"spec._aso.campaign": name}, {"spec._tasks": 1})
    if fw is None:
        raise InputError("campaign", f"no Firework of campaign {name!r} in this LaunchPad")
    for task in (fw.get("spec") or {}).get("_tasks") or []:
        args = ((task or {}).get("job") or {}).get("function_args") or []
        if args and isinstance(args[0], dict) and args[0].get("kind"):
            return {k: v for k, v in args[0].items() if not str(k).startswith("@")}
    raise InputError("campaign", f"the Fireworks of campaign {name!r} carry no campaign-store spec")


def _img(path: Path, alt: str, ident: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img id='{ident}' alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def campaign_page(lp: LaunchPad, name: str) -> str:
    """The page's HTML for campaign ``name`` (cached until the campaign's store changes)."""
    from aso_workflows.results import Campaign

    spec = campaign_store_spec(lp, name)
    try:
        campaign = Campaign.open(name, spec)  # the store is opened once per process (get_db)
    except AsoError as exc:
        return _page(name, f"<p class='error'>{html.escape(str(exc))}</p>", refresh=True)
    summary = campaign.summary()
    jobs = tuple((j["job_id"], j["state"], j["reason"]) for j in summary.slurm_jobs or [])
    key = (summary.updated, summary.n_used, summary.n_failed, len(summary.pending), summary.status)
    key += (summary.controller.get("running"), summary.controller.get("holder"), jobs)
    with _LOCK:
        cached = _CACHE.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
    body = _render(campaign, summary)
    out = _page(name, body, refresh=summary.stored_status not in ("completed", "failed", "stopped"))
    with _LOCK:
        _CACHE[name] = (key, out)
    return out


def _page(name: str, body: str, refresh: bool) -> str:
    from aso_workflows.report.markup import CSS

    meta = f"<meta http-equiv='refresh' content='{REFRESH_S}'>" if refresh else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"{meta}<title>Campaign {html.escape(name)}</title><style>{CSS}</style></head><body>"
        f"<p><a href='/'>FireWorks workflows</a> · <a href='/wf/metadata/campaign/{quote(name, safe='')}/'>"
        f"this campaign's workflow</a></p><h1>Campaign {html.escape(name)}</h1>{body}</body></html>"
    )


def _pdf_section(state: Any, best: Any, tmp: Path) -> list[str]:
    """The PDF fit of the best structure: PDFgui's plot, parameters with uncertainties, Rw, bonds."""
    from aso_workflows.report.html import pdf_fit_html
    from aso_workflows.report.pdf_fit import pdf_fit_view, plot_pdf_fit

    view = pdf_fit_view(state, best)
    if view is None:
        return []
    png = plot_pdf_fit(view, tmp / "pdf_fit.png")
    return [pdf_fit_html(view, _img(png, "PDF fit: data, model and difference", "aso-pdf-fit"))]


def _render(campaign: Campaign, summary: CampaignSummary) -> str:
    """The page's body: the summary facts, the figures, the failures and the pending candidates."""
    parts = [_facts(campaign, summary)]
    parts += _figures(campaign)
    parts += _failures(summary)
    parts += _pending(summary)
    parts += _slurm_jobs(summary.slurm_jobs)
    return "\n".join(parts)


def _facts(campaign: Campaign, summary: CampaignSummary) -> str:
    """The summary as a definition list (status, optimiser, simulations, mismatches, store)."""
    from aso_workflows.report.markup import fmt

    facts = [
        ("status", summary.status + (f" ({summary.stop_reason})" if summary.stop_reason else "")),
        ("controller", _controller(summary.controller)),
        ("optimizer", summary.optimizer),
        ("techniques", ", ".join(t.upper() for t in campaign.techniques)),
        ("iteration", str(summary.iteration)),
        ("simulations", f"{summary.n_used} / {summary.budget} used, {summary.n_failed} failed"),
        ("start mismatch", fmt(summary.start_objective)),
        (
            "best mismatch",
            fmt(summary.best_objective) + (f" (candidate {summary.best_ref})" if summary.best_ref else ""),
        ),
        ("pending", str(len(summary.pending))),
        ("updated", fmt(summary.updated)),
        ("store", html.escape(summary.store)),
    ]
    return (
        "<dl id='summary'>"
        + "".join(f"<dt>{k}</dt><dd class='aso-{k.replace(' ', '-')}'>{v}</dd>" for k, v in facts)
        + "</dl>"
    )


def _figures(campaign: Campaign) -> list[str]:
    """The convergence and spectra figures of the report, inline (a note before any result)."""
    from aso_workflows.report.history import history_rows
    from aso_workflows.schemas import EvaluationDoc

    state = campaign.state
    best = [EvaluationDoc.from_mongo(d) for d in state.best(1)]
    if not best:
        return ["<p class='muted' id='aso-no-results'>No simulation has completed yet.</p>"]
    import matplotlib

    matplotlib.use("Agg")
    from aso_workflows.report.figures import ReportFigures

    figures = ReportFigures(state, history_rows(state), best)
    with tempfile.TemporaryDirectory(prefix="aso-page-") as tmp:
        conv = figures.convergence(Path(tmp) / "convergence.png")
        spectra = figures.spectra(Path(tmp) / "spectra.png")
        return [
            "<h2 id='convergence'>Best mismatch vs simulations</h2>",
            _img(conv, "best mismatch vs simulations", "aso-convergence"),
            "<h2 id='spectra'>Spectra: target, start and best</h2>",
            _img(spectra, "target, start and best spectra", "aso-spectra"),
            *_pdf_section(state, best[0], Path(tmp)),
        ]


def _failures(summary: CampaignSummary) -> list[str]:
    """The failed evaluations with their reasons, host and Slurm job."""
    from aso_workflows.report.markup import fmt, table

    parts = [f"<h2 id='failures'>Failed evaluations ({len(summary.failures)})</h2>"]
    if not summary.failures:
        return parts + ["<p class='muted'>None.</p>"]
    keys = ("ref", "status", "failure_kind", "error", "host", "slurm_job_id")
    rows = [[fmt(f[k]) for k in keys] for f in summary.failures]
    cols = ["candidate", "status", "kind", "reason", "host", "Slurm job"]
    return parts + [table(cols, rows, left={0, 1, 2, 3, 4}, css_id="failed-table")]


def _pending(summary: CampaignSummary) -> list[str]:
    """The candidates proposed and not yet evaluated."""
    from aso_workflows.report.markup import fmt, table

    parts = [f"<h2 id='pending'>Pending candidates ({len(summary.pending)})</h2>"]
    if not summary.pending:
        return parts + ["<p class='muted'>None.</p>"]
    rows = [[fmt(p["ref"]), fmt(p["kind"]), fmt(p["created"])] for p in summary.pending]
    return parts + [table(["candidate", "kind", "proposed"], rows, left={0, 1, 2}, css_id="pending-table")]


def _controller(c: dict) -> str:
    """The controller fact: who drives the campaign, or why nobody does and what continues it."""
    if c.get("running"):
        text = f"running: pid {c['pid']} on {c['host']}, since {c['since']}"
    else:
        text = ("" if c.get("executor") == "online" else "not running: ") + str(c.get("reason", ""))
    out = html.escape(text)
    if c.get("resume"):
        out += f"<br>to continue: <code id='aso-resume'>{html.escape(c['resume'])}</code>"
    return out


def _slurm_jobs(jobs: list[dict] | None) -> list[str]:
    """The campaign's Slurm jobs still queued or running, with Slurm's reason for those that wait."""
    from aso_workflows.report.html import fmt, table

    if jobs is None:
        return []
    parts = [f"<h2 id='slurm'>Slurm jobs queued or running ({len(jobs)})</h2>"]
    if not jobs:
        return parts + ["<p class='muted'>None.</p>"]
    for j in jobs:
        if j.get("blocked"):
            parts.append(
                f"<p class='error'>Slurm job {html.escape(j['job_id'])} cannot start: "
                f"{html.escape(j['reason'])} ({html.escape(j['hint'])}).</p>"
            )
    rows = [
        [
            fmt(j["job_id"]),
            fmt(j["state"]),
            fmt(j["reason"] + (f": {j['hint']}" if j.get("hint") else "")),
            fmt(f"{j['waiting_s']:.0f} s" if j.get("waiting_s") is not None else ""),
            fmt(j["partition"]),
            fmt(j.get("firework") or j["name"]),
        ]
        for j in jobs
    ]
    cols = ["job", "state", "reason", "waiting", "partition", "Firework"]
    return parts + [table(cols, rows, left={0, 1, 2, 4, 5}, css_id="slurm-table")]
