"""``aso resume CAMPAIGN``: continue a campaign from its store after the controller died (or was stopped).

The campaign store is the record of truth: evaluations, models and proposals are keyed documents, so the
latest iteration is rebuilt from it and nothing stored is simulated, trained or proposed again
(:class:`~aso_workflows.campaign.jobs.CampaignMaker`). A campaign that ran through ``aso run`` resumes
on this machine; one that ran through ``aso submit`` resumes on the cluster with the queues, launch
directory and JobStore recorded in its campaign document. See ``docs/reliability.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aso_workflows.commands.common import (
    DatabaseOption,
    StoreOption,
    guard,
    run_summary,
    warn_queue_misfits,
    write_campaign_outputs,
)
from aso_workflows.errors import InputError
from aso_workflows.locate import resolve_campaign

if TYPE_CHECKING:
    from fireworks import LaunchPad

    from aso_workflows.campaign.state import CampaignState
    from aso_workflows.cluster.slurm import RunSummary
    from aso_workflows.config import CampaignConfig
    from aso_workflows.locate import CampaignRef

__all__ = ["resume", "stored_config"]


def stored_config(ref: CampaignRef, budget: int | None = None) -> tuple[CampaignConfig, dict]:
    """The campaign's configuration as stored, pointed at the store ``ref`` found it in.

    The output folder is the campaign's recorded work folder; start and target files need not exist
    any more (the stored start structure and target spectra are used).
    """
    from aso_workflows.campaign.state import get_db
    from aso_workflows.config import CampaignConfig, StoreConfig
    from aso_workflows.errors import InputError as _InputError

    db = get_db(ref.spec)
    doc = db.campaigns.find_one({"_id": ref.name})
    if doc is None:
        raise _InputError("CAMPAIGN", f"no campaign named {ref.name!r} in {db.spec.redacted()}")
    raw = dict(doc["config"])
    spec = ref.spec
    raw["store"] = StoreConfig(
        kind=spec.kind,
        path=Path(spec.path) if spec.path else None,
        uri=spec.uri,
        database=spec.database,
        timeout_ms=spec.timeout_ms,
        **({"password_file": Path(spec.password_file)} if spec.password_file else {}),
    ).model_dump(mode="json")
    if doc.get("workdir"):
        raw["output"] = doc["workdir"]
    if budget is not None:
        raw["budget"] = budget
    cfg = CampaignConfig.model_validate(raw)
    return cfg, doc


def _launchpad(source: str | None, recorded: dict, name: str) -> LaunchPad:
    """The LaunchPad given with --launchpad, else the one ``aso submit`` recorded for the campaign.

    The record is the launchpad file's path or the URI without its password
    (:func:`~aso_workflows.cluster.launchpad.launchpad_reference`); without either, one line says so.
    """
    from aso_workflows.cluster.launchpad import load_launchpad

    if source is not None:
        return load_launchpad(source)
    ref = recorded.get("launchpad")
    if not ref:
        raise InputError(
            "--launchpad",
            f"no LaunchPad is recorded for campaign {name!r} (it was not submitted with aso submit "
            "--launchpad); give my_launchpad.yaml or a mongodb:// URI",
        )
    return load_launchpad(ref["source"], database=ref.get("database"))


ExecutorOption = Annotated[
    str,
    typer.Option(
        help="auto (how the campaign ran: 'aso run' → local, 'aso submit' → slurm), local or slurm."
    ),
]
LaunchpadOption = Annotated[
    str | None,
    typer.Option(
        "--launchpad",
        "-l",
        help="slurm: my_launchpad.yaml or mongodb:// URI (an unfinished workflow there is picked up "
        "with its running jobs); default: the LaunchPad aso submit recorded for the campaign.",
    ),
]
QadapterCpuOption = Annotated[
    Path | None, typer.Option(help="slurm: queue adapter for CPU jobs (default: as recorded).")
]
QadapterGpuOption = Annotated[
    Path | None, typer.Option(help="slurm: queue adapter for the GPU job (default: as recorded).")
]
LaunchDirOption = Annotated[
    Path | None, typer.Option(help="slurm: launch directories (default: as recorded).")
]
JobStoreOption = Annotated[
    str | None,
    typer.Option(help="slurm: jobflow JobStore, mongodb:// URI or shared directory (default: as recorded)."),
]
PythonOption = Annotated[str | None, typer.Option(help="slurm: Python on the compute nodes.")]
TimeoutOption = Annotated[
    float | None, typer.Option(help="slurm: stop the controller after this many seconds.")
]
LostAfterOption = Annotated[
    float,
    typer.Option(help="slurm: seconds after a Slurm job ended without a result before it is rerun."),
]


def resume(
    campaign: Annotated[str, typer.Argument(help="Campaign YAML file or campaign name.", show_default=False)],
    store: StoreOption = None,
    database: DatabaseOption = "aso",
    executor: ExecutorOption = "auto",
    launchpad: LaunchpadOption = None,
    qadapter_cpu: QadapterCpuOption = None,
    qadapter_gpu: QadapterGpuOption = None,
    launch_dir: LaunchDirOption = None,
    job_store: JobStoreOption = None,
    python: PythonOption = None,
    timeout: TimeoutOption = None,
    lost_after: LostAfterOption = 30.0,
    budget: Annotated[int | None, typer.Option(help="Raise the simulation budget.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Continue a campaign from its store: after a crash, a kill, or to spend a larger --budget.

    Nothing already stored is simulated again and nothing is duplicated (evaluations are keyed by
    structure fingerprint and simulator settings). On the Slurm path the dead controller's jobs still
    queued or running are cancelled and the latest iteration is submitted anew, unless the LaunchPad (the
    one aso submit recorded, or --launchpad) holds the unfinished workflow, which is then driven on with
    its jobs.
    """
    with guard():
        ref = resolve_campaign(campaign, store, database)
        cfg, doc = stored_config(ref, budget)
        if doc.get("status") == "completed" and budget is None and _already_ended(ref, cfg, doc):
            return
        recorded = doc.get("executor") or {}
        kind = _executor_kind(executor, recorded, launchpad)
        if kind == "local":
            from aso_workflows.campaign.local import LocalCampaignRunner

            runner = LocalCampaignRunner(progress=not quiet)
            state = runner.run(cfg)
            errors = runner.errors
        else:
            state, summary = _resume_slurm(
                cfg, recorded, launchpad, qadapter_cpu, qadapter_gpu, launch_dir, job_store, python,
                timeout, lost_after,
            )  # fmt: skip
            typer.echo(
                f"workflow {summary.workflow_state}: {len(summary.launches)} Slurm jobs, "
                f"{len(summary.lost())} lost and rerun"
            )
            errors = []
        write_campaign_outputs(state, cfg)
    run_summary(state, cfg)
    if errors:
        typer.echo(
            f"error: {len(errors)} job(s) failed (tracebacks in {cfg.output_dir.resolve() / 'errors.log'}); "
            "run aso resume again",
            err=True,
        )
        raise typer.Exit(1)


def _already_ended(ref: CampaignRef, cfg: CampaignConfig, doc: dict) -> bool:
    """Whether the completed campaign ``ref`` still meets its stopping rule (then its summary is printed
    and there is nothing to do)."""
    from aso_workflows.campaign.learn import should_stop
    from aso_workflows.campaign.state import CampaignState, get_db

    state = CampaignState.load(get_db(ref.spec), ref.name)
    if should_stop(state) is None:
        return False
    typer.echo(f"campaign {cfg.name} already ended ({doc.get('stop_reason', '')}); nothing to do")
    run_summary(state, cfg)
    return True


def _executor_kind(executor: str, recorded: dict, launchpad: str | None) -> str:
    """``local`` or ``slurm``: ``--executor``, or for ``auto`` how the campaign ran (or --launchpad)."""
    kind = executor.strip().lower()
    if kind == "auto":
        kind = "slurm" if recorded.get("kind") == "slurm" or launchpad else "local"
    if kind not in ("local", "slurm"):
        raise InputError("--executor", f"expected auto, local or slurm, got {executor!r}")
    return kind


def _resume_slurm(
    cfg: CampaignConfig,
    recorded: dict,
    launchpad: str | None,
    qadapter_cpu: Path | None,
    qadapter_gpu: Path | None,
    launch_dir: Path | None,
    job_store: str | None,
    python: str | None,
    timeout: float | None,
    lost_after: float,
) -> tuple[CampaignState, RunSummary]:
    from fireworks.utilities.fw_serializers import load_object

    from aso_workflows.cluster.runner import ClusterCampaignRunner
    from aso_workflows.jobstore import shared_job_store

    out = cfg.output_dir.resolve()
    queues: dict = {}
    for category, q in (recorded.get("queues") or {}).items():
        queues[category] = load_object(q) if isinstance(q, dict) else q
    if qadapter_cpu is not None:
        queues["default"] = str(qadapter_cpu)
    if qadapter_gpu is not None:
        queues["gpu"] = str(qadapter_gpu)
    for key in ("default", "gpu"):
        if key not in queues:
            raise InputError(
                f"--qadapter-{'cpu' if key == 'default' else 'gpu'}",
                "no queue adapter recorded for this campaign; give the my_qadapter_*.yaml file",
            )
        if isinstance(queues[key], str) and not Path(queues[key]).is_file():
            raise InputError(queues[key], "queue adapter file not found")
    lp = _launchpad(launchpad, recorded, cfg.name)  # a missing LaunchPad ends it before any warning
    warn_queue_misfits(queues)
    runner = ClusterCampaignRunner(
        launchpad=lp,
        launch_dir=launch_dir or Path(recorded.get("launch_dir") or out / "launches"),
        queues=queues,
        job_store=shared_job_store(job_store or recorded.get("job_store") or str(out / "jobstore")),
        python=python or recorded.get("python") or sys.executable,
        timeout=timeout,
        lost_after=lost_after,
    )
    return runner.run(cfg, resume=True)
