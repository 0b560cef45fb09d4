"""``aso submit CAMPAIGN.yaml --launchpad FILE``: the same campaign on Slurm through FireWorks."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from aso_workflows.commands.common import (
    guard,
    run_summary,
    warn_inline_passwords,
    warn_queue_misfits,
    write_campaign_outputs,
)
from aso_workflows.errors import InputError

__all__ = ["submit"]


LaunchpadOption = Annotated[
    str,
    typer.Option("--launchpad", "-l", help="my_launchpad.yaml or a mongodb:// URI.", show_default=False),
]
QadapterCpuOption = Annotated[
    Path | None,
    typer.Option(
        help="Queue adapter for CPU jobs (default: my_qadapter_cpu.yaml beside the launchpad file)."
    ),
]
QadapterGpuOption = Annotated[
    Path | None,
    typer.Option(help="Queue adapter for the GPU training job (default: my_qadapter_gpu.yaml beside it)."),
]
LaunchDirOption = Annotated[
    Path | None,
    typer.Option(help="Launch directories, on a disk the compute nodes share (default: <output>/launches)."),
]
JobStoreOption = Annotated[
    str | None,
    typer.Option(
        help="jobflow JobStore for job outputs: a mongodb:// URI or a shared directory (default: <output>/jobstore)."
    ),
]
JobStorePasswordOption = Annotated[
    Path | None,
    typer.Option(
        help="File with the password of the --job-store URI's user (mongodb://user@host/db): only its "
        "path goes into the Fireworks, never the password."
    ),
]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="Drive the workflow to the end from here (offline controller), or only add it for online workers (qlaunch rapidfire).",
    ),
]
TimeoutOption = Annotated[float | None, typer.Option(help="Stop the controller after this many seconds.")]


def submit(
    campaign: Annotated[Path, typer.Argument(help="Campaign YAML file.", show_default=False)],
    launchpad: LaunchpadOption,
    qadapter_cpu: QadapterCpuOption = None,
    qadapter_gpu: QadapterGpuOption = None,
    launch_dir: LaunchDirOption = None,
    job_store: JobStoreOption = None,
    job_store_password_file: JobStorePasswordOption = None,
    python: Annotated[str, typer.Option(help="Python on the compute nodes.")] = sys.executable,
    wait: WaitOption = True,
    timeout: TimeoutOption = None,
) -> None:
    """Submit a campaign to a cluster: a FireWorks workflow whose jobs run as Slurm jobs.

    Validates the campaign, stores it, converts its first iteration to a FireWorks workflow with readable
    names (campaign / iteration / candidate / technique) and adds it to the LaunchPad. With --wait (the
    default) this process is the offline controller: it submits every READY Firework with sbatch (the
    training job to the GPU queue) and reads results back until the campaign ends. See docs/cluster.md.
    """
    with guard():
        from aso_workflows.cluster.launchpad import load_launchpad
        from aso_workflows.cluster.runner import ClusterCampaignRunner
        from aso_workflows.config import load_config
        from aso_workflows.jobstore import shared_job_store

        cfg = load_config(campaign)
        queues = _queues(launchpad, qadapter_cpu, qadapter_gpu)
        lp = load_launchpad(launchpad)  # a LaunchPad it cannot open ends it before any warning
        warn_queue_misfits(queues)
        out = cfg.output_dir.resolve()
        runner = ClusterCampaignRunner(
            launchpad=lp,
            launch_dir=launch_dir or out / "launches",
            queues=queues,
            job_store=shared_job_store(
                job_store or str(out / "jobstore"), password_file=job_store_password_file
            ),
            python=python,
            timeout=timeout,
        )
        warn_inline_passwords({"store.uri": cfg.store.uri, "--job-store": job_store})
        if not wait:
            fw_id = runner.submit(cfg)
            typer.echo(
                f"added campaign {cfg.name} as workflow (fw_id {fw_id}); start workers with qlaunch rapidfire"
            )
            return
        state, summary = runner.run(cfg)
        write_campaign_outputs(state, cfg)
    typer.echo(f"workflow {summary.workflow_state}: {len(summary.launches)} Slurm jobs")
    run_summary(state, cfg)


def _queues(launchpad: str, qadapter_cpu: Path | None, qadapter_gpu: Path | None) -> dict[str, str]:
    """The queue adapter files by FireWorks category (``default``: CPU jobs, ``gpu``): given, or
    ``my_qadapter_cpu.yaml``/``my_qadapter_gpu.yaml`` beside the launchpad file (the current folder for
    a URI); a missing one is one line."""
    lp_dir = Path(launchpad).expanduser().resolve().parent if "://" not in launchpad else Path.cwd()
    queues = {
        "default": str(qadapter_cpu or lp_dir / "my_qadapter_cpu.yaml"),
        "gpu": str(qadapter_gpu or lp_dir / "my_qadapter_gpu.yaml"),
    }
    for key, q in queues.items():
        if not Path(q).is_file():
            raise InputError(q, f"queue adapter for {'CPU' if key == 'default' else 'GPU'} jobs not found")
    return queues
