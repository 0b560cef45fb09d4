"""The ``aso`` command line.

Each command is a small function that imports what it needs inside (pymatgen, torch, FEFF ... are
slow to import), so ``aso --help`` stays fast. Commands report user errors (:class:`AsoError`) as one
line ``error: <message>`` on stderr with exit code 2, never a traceback: wrap the body of a new
command in ``with _guard():``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from aso_workflows.errors import AsoError, InputError

__all__ = ["app", "parse_settings", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2

app = typer.Typer(
    name="aso",
    help=(
        "Determine atomic structure from spectroscopy (X-ray PDF, EXAFS, XANES) by active learning "
        "with a graph-neural-network surrogate ensemble (a re-implementation of ActiveStructOpt).\n\n"
        "Examples:\n\n"
        "  aso simulate LiNiO2.cif --technique pdf --plot pdf.png\n\n"
        "  aso simulate LiNiO2.cif -t xanes --absorber Ni -s radius=6 --json > xanes.json"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_USER_ERROR)


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    """Turn :class:`AsoError` into a one-line ``error: ...`` and exit code 2."""
    try:
        yield
    except AsoError as exc:
        _fail(" ".join(str(exc).split()))
    except ValueError as exc:  # pydantic's ValidationError is one: a model validated outside load_config
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        from aso_workflows.config import validation_message

        _fail(f"{exc.title}: {validation_message(exc)}")


def parse_settings(items: list[str] | None) -> dict:
    """``["qmax=20", "engine=pdffit2"]`` → ``{"qmax": 20, "engine": "pdffit2"}``.

    Values are read as YAML scalars/lists (numbers, booleans, ``[1, 2]``), falling back to the string.
    """
    import yaml

    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError("--setting", f"expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """aso-workflows command line."""
    if version:
        from aso_workflows import __version__

        typer.echo(f"aso-workflows {__version__}")
        raise typer.Exit(0)


# ---- aso simulate --------------------------------------------------------------------------------
def _peaks(x, y, n: int = 3) -> list[float]:
    """Positions of the first ``n`` clear local maxima (prominence ≥ 5 % of the value range)."""
    import numpy as np
    from scipy.signal import find_peaks

    y = np.asarray(y, dtype=float)
    span = float(np.ptp(y)) if y.size else 0.0
    if span == 0:
        return []
    idx, _ = find_peaks(y, prominence=0.05 * span)
    return [float(x[i]) for i in idx[:n]]


def _first_shell(spectrum) -> float | None:
    """R of the largest |χ(R)| peak, if the EXAFS spectrum carries ``extra['r']``/``extra['chir_mag']``."""
    import numpy as np

    r, mag = spectrum.extra.get("r"), spectrum.extra.get("chir_mag")
    if not r or not mag or len(r) != len(mag):
        return None
    r, mag = np.asarray(r, dtype=float), np.asarray(mag, dtype=float)
    inside = r > 0.8  # skip the low-R background below any physical bond
    if not inside.any():
        return None
    return float(r[inside][np.argmax(mag[inside])])


_AXIS = {
    "pdf": ("r (Å)", "G(r) (Å⁻²)"),
    "exafs": ("k (Å⁻¹)", "k^w χ(k)"),
    "xanes": ("E − E0 (eV)", "normalised μ(E)"),
}


def _plot(spectrum, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_chir = spectrum.technique == "exafs" and _first_shell(spectrum) is not None
    fig, axes = plt.subplots(1, 2 if has_chir else 1, figsize=(10 if has_chir else 6, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(spectrum.x, spectrum.y, lw=1.2)
    xl, yl = _AXIS[spectrum.technique]
    if spectrum.grid.name == "E":
        xl = "E (eV)"
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title(title)
    ax.axhline(0, color="0.7", lw=0.6)
    if has_chir:
        ax2 = axes[0, 1]
        ax2.plot(spectrum.extra["r"], spectrum.extra["chir_mag"], lw=1.2, color="C1")
        ax2.set_xlabel("R (Å)")
        ax2.set_ylabel("|χ(R)|")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Write a matplotlib figure (creating the folder) and close it; an unwritable path is one line."""
    import matplotlib.pyplot as plt

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    except OSError as exc:
        raise InputError(path, f"cannot write the plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)


@app.command()
def simulate(
    structure: Annotated[
        Path, typer.Argument(help="Structure file: CIF, POSCAR or pymatgen JSON.", show_default=False)
    ],
    technique: Annotated[
        str,
        typer.Option(
            "--technique", "-t", help="Spectrum to simulate: pdf, exafs or xanes.", show_default=False
        ),
    ],
    absorber: Annotated[
        str | None, typer.Option("--absorber", "-a", help="Absorbing element for exafs/xanes, e.g. Ni.")
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

    with _guard():
        from aso_workflows.spectra.registry import make_simulator
        from aso_workflows.structures import load_structure

        technique = technique.strip().lower()
        settings = parse_settings(setting)
        if technique in ("exafs", "xanes"):
            if absorber is None and "absorber" not in settings:
                raise InputError("--absorber", f"required for {technique} (e.g. --absorber Ni)")
            if absorber is not None:
                settings["absorber"] = absorber
        elif absorber is not None:
            raise InputError("--absorber", f"only applies to exafs/xanes, not {technique!r}")
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


def _summary(spectrum, struct, path: Path, elapsed: float, plot: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

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
    peaks = _peaks(x, spectrum.y)
    if peaks:
        table.add_row("peaks", ", ".join(f"{p:.3f}" for p in peaks) + f" {unit}")
    if spectrum.absorber_sites:
        table.add_row("absorber sites", f"{len(spectrum.absorber_sites)} averaged")
    if spectrum.technique == "exafs":
        r1 = _first_shell(spectrum)
        if r1 is not None:
            table.add_row("|χ(R)| first shell", f"{r1:.3f} Å")
    table.add_row("time", f"{elapsed:.2f} s")
    if plot is not None:
        table.add_row("plot", str(plot))
    Console().print(table)


# ---- aso run -------------------------------------------------------------------------------------
@app.command()
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
        str | None, typer.Option("--optimizer", help="Override the optimizer: aso or random.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Override the campaign name.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a whole campaign on this machine (embedded store, no server, no cluster).

    Each iteration is a jobflow flow run with run_locally: simulate the candidates, retrain the surrogate
    ensemble, propose the next candidates. Running the same command again resumes: nothing already
    stored is simulated twice. Writes best CIFs, history.csv and report.png/html into the output folder.
    """
    with _guard():
        from aso_workflows.campaign.local import LocalCampaignRunner
        from aso_workflows.config import load_config

        overrides = {
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
            overrides["output"] = str(Path(overrides["output"]).resolve())
        cfg = load_config(campaign, overrides)
        runner = LocalCampaignRunner(progress=not quiet)
        state = runner.run(cfg)
    _run_summary(state, cfg)
    if runner.errors:
        first = runner.errors[0].strip().splitlines()
        typer.echo(
            f"error: {len(runner.errors)} job(s) failed, first: {first[0]} ... {first[-1]} "
            f"(tracebacks in {cfg.output_dir.resolve() / 'errors.log'}); run the same command again to resume",
            err=True,
        )
        raise typer.Exit(1)


def _run_summary(state, cfg) -> None:
    from rich.console import Console
    from rich.table import Table

    best = state.best(1)
    start = next((e for e in state.evaluations() if e.get("kind") == "start"), None)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("campaign", f"{state.name} ({state.doc.get('status')}: {state.doc.get('stop_reason', '')})")
    table.add_row(
        "simulations", f"{state.n_used()} / {cfg.budget} ({len(state.evaluations('failed'))} failed)"
    )
    if start is not None:
        table.add_row("start mismatch", f"{start['objective']:.4g}")
    if best:
        b = best[0]
        table.add_row(
            "best mismatch", f"{b['objective']:.4g} (iteration {b['iteration']}, candidate {b['candidate']})"
        )
    out = cfg.output_dir.resolve()
    table.add_row("outputs", f"{out}/best_01.cif, history.csv, report.png, report.html")
    Console().print(table)


# ---- aso submit ----------------------------------------------------------------------------------
def _warn_inline_passwords(uris: dict[str, str | None]) -> None:
    """One stderr line per URI whose password would be copied into every Firework (never the password)."""
    from aso_workflows.store import redact_uri

    for where, uri in uris.items():
        if uri and redact_uri(uri) != uri:
            typer.echo(
                f"warning: the password in {where} is copied into every Firework and FW.json; "
                "put it in a password file instead (docs/security.md)",
                err=True,
            )


@app.command()
def submit(
    campaign: Annotated[Path, typer.Argument(help="Campaign YAML file.", show_default=False)],
    launchpad: Annotated[
        str,
        typer.Option("--launchpad", "-l", help="my_launchpad.yaml or a mongodb:// URI.", show_default=False),
    ],
    qadapter_cpu: Annotated[
        Path | None,
        typer.Option(
            help="Queue adapter for CPU jobs (default: my_qadapter_cpu.yaml beside the launchpad file)."
        ),
    ] = None,
    qadapter_gpu: Annotated[
        Path | None,
        typer.Option(
            help="Queue adapter for the GPU training job (default: my_qadapter_gpu.yaml beside it)."
        ),
    ] = None,
    launch_dir: Annotated[
        Path | None,
        typer.Option(
            help="Launch directories, on a disk the compute nodes share (default: <output>/launches)."
        ),
    ] = None,
    job_store: Annotated[
        str | None,
        typer.Option(
            help="jobflow JobStore for job outputs: a mongodb:// URI or a shared directory (default: <output>/jobstore)."
        ),
    ] = None,
    job_store_password_file: Annotated[
        Path | None,
        typer.Option(
            help="File with the password of the --job-store URI's user (mongodb://user@host/db): only its "
            "path goes into the Fireworks, never the password."
        ),
    ] = None,
    python: Annotated[str, typer.Option(help="Python on the compute nodes.")] = sys.executable,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="Drive the workflow to the end from here (offline controller), or only add it for online workers (qlaunch rapidfire).",
        ),
    ] = True,
    timeout: Annotated[
        float | None, typer.Option(help="Stop the controller after this many seconds.")
    ] = None,
) -> None:
    """Submit a campaign to a cluster: a FireWorks workflow whose jobs run as Slurm jobs.

    Validates the campaign, stores it, converts its first iteration to a FireWorks workflow with readable
    names (campaign / iteration / candidate / technique) and adds it to the LaunchPad. With --wait (the
    default) this process is the offline controller: it submits every READY Firework with sbatch (the
    training job to the GPU queue) and reads results back until the campaign ends. See docs/cluster.md.
    """
    with _guard():
        from aso_workflows.campaign.cluster import ClusterCampaignRunner
        from aso_workflows.cluster.jobstore import shared_job_store
        from aso_workflows.cluster.launchpad import load_launchpad
        from aso_workflows.config import load_config

        cfg = load_config(campaign)
        lp_dir = Path(launchpad).expanduser().resolve().parent if "://" not in launchpad else Path.cwd()
        queues = {
            "default": str(qadapter_cpu or lp_dir / "my_qadapter_cpu.yaml"),
            "gpu": str(qadapter_gpu or lp_dir / "my_qadapter_gpu.yaml"),
        }
        for key, q in queues.items():
            if not Path(q).is_file():
                raise InputError(
                    q, f"queue adapter for {'CPU' if key == 'default' else 'GPU'} jobs not found"
                )
        out = cfg.output_dir.resolve()
        runner = ClusterCampaignRunner(
            launchpad=load_launchpad(launchpad),
            launch_dir=launch_dir or out / "launches",
            queues=queues,
            job_store=shared_job_store(
                job_store or str(out / "jobstore"), password_file=job_store_password_file
            ),
            python=python,
            timeout=timeout,
        )
        _warn_inline_passwords({"store.uri": cfg.store.uri, "--job-store": job_store})
        if not wait:
            fw_id = runner.submit(cfg)
            typer.echo(
                f"added campaign {cfg.name} as workflow (fw_id {fw_id}); start workers with qlaunch rapidfire"
            )
            return
        state, summary = runner.run(cfg)
    typer.echo(f"workflow {summary.workflow_state}: {len(summary.launches)} Slurm jobs")
    _run_summary(state, cfg)


from aso_workflows.commands import monitor, resume, webgui  # noqa: E402,F401  (registers commands)

if __name__ == "__main__":  # pragma: no cover
    app()
