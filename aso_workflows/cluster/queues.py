"""Queue adapters: FireWorks' ``CommonAdapter`` on the Slurm templates in ``slurm_templates/``.

One queue per FireWorks category: the same ``my_qadapter_cpu.yaml`` / ``my_qadapter_gpu.yaml`` serve
``qlaunch`` (online mode) and :class:`~aso_workflows.cluster.offline.SlurmOfflineExecutor` (offline
mode), and the job script is always rendered by FireWorks from the user's template (placeholders
``$${name}``; a line whose placeholder has no value is dropped).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aso_workflows.errors import InputError

if TYPE_CHECKING:
    from fireworks.queue.queue_adapter import QueueAdapterBase
    from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter

__all__ = [
    "TEMPLATES_DIR",
    "template_path",
    "slurm_queue",
    "load_queue_adapter",
    "render_script",
    "partition_nodes",
    "queue_misfits",
]

# Templates ship at the repository root (users copy and edit them); see docs/cluster.md.
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "slurm_templates"


def template_path(name_or_path: str | Path) -> Path:
    """``"cpu"``/``"gpu"`` → ``slurm_templates/slurm_cpu.sh``/``slurm_gpu.sh``; a path is checked and returned."""
    text = str(name_or_path)
    path = TEMPLATES_DIR / f"slurm_{text}.sh" if "/" not in text and "." not in text else Path(text)
    if not path.is_file():
        raise InputError(str(path), "Slurm template not found (expected a file with $${...} placeholders)")
    if "$${rocket_launch}" not in path.read_text():
        raise InputError(str(path), "the Slurm template has no $${rocket_launch} line: nothing would run")
    return path.resolve()


def slurm_queue(template: str | Path = "cpu", **params: Any) -> CommonAdapter:
    """A FireWorks ``CommonAdapter`` for Slurm on ``template`` with the template's fields ``params``.

    Examples
    --------
    >>> gpu = slurm_queue("gpu", partition="gpu", walltime="02:00:00", gres="gpu:1",
    ...                   pre_rocket="source ~/aso/.venv/bin/activate")  # doctest: +SKIP
    """
    from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter

    return CommonAdapter(q_type="SLURM", template_file=str(template_path(template)), **params)


def load_queue_adapter(path: str | Path) -> QueueAdapterBase:
    """A queue adapter from a ``my_qadapter_*.yaml`` file.

    A relative ``_fw_template_file`` is taken relative to the YAML file (``qlaunch`` itself resolves it
    against its working directory, so give an absolute path there).

    Raises
    ------
    InputError
        The file is missing or unreadable, is not a queue adapter, or its template is missing.
    """
    from fireworks.utilities.fw_serializers import load_object
    from monty.serialization import loadfn

    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "queue adapter file not found (expected my_qadapter_*.yaml)")
    try:
        d = loadfn(path)
    except Exception as exc:  # noqa: BLE001 - YAML parse errors of several kinds
        raise InputError(str(path), f"not a readable YAML file ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(d, dict) or "_fw_name" not in d:
        raise InputError(
            str(path), "not a queue adapter: expected '_fw_name: CommonAdapter' and '_fw_q_type: SLURM'"
        )
    d = dict(d)
    if d.get("_fw_template_file"):
        template = Path(d["_fw_template_file"]).expanduser()
        if not template.is_absolute():
            template = path.parent / template
        d["_fw_template_file"] = str(template_path(template))
    try:
        return load_object(d)
    except Exception as exc:  # noqa: BLE001 - FireWorks raises ValueError/KeyError/RuntimeError here
        raise InputError(str(path), f"invalid queue adapter ({str(exc).splitlines()[0][:160]})") from None


def render_script(qadapter: QueueAdapterBase, launch_dir: str | Path, **overrides: Any) -> str:
    """The job script ``qadapter`` would submit for ``launch_dir`` (``overrides`` update its fields)."""
    from fireworks.utilities.fw_serializers import load_object

    qa = load_object(qadapter.to_dict())  # a copy: the caller's adapter is not changed
    qa.update(overrides)
    return qa.get_script_str(str(launch_dir))


def _megabytes(text: str) -> float | None:
    """Slurm memory (``16G``, ``2000M``, ``2000``: MB by default, ``1T``) in MB; None if unreadable."""
    text = str(text).strip().upper().removesuffix("B")
    scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
    try:
        return float(text[:-1]) * scale[text[-1]] if text[-1:] in scale else float(text)
    except ValueError:
        return None


def _minutes(text: str) -> float | None:
    """Slurm time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in minutes; None for infinite/unknown."""
    text = str(text).strip()
    if not text or text.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days, _, rest = text.rpartition("-")
    try:
        parts = [float(x) for x in rest.split(":")]
        d = float(days) if days else 0.0
    except ValueError:
        return None
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, m, s = (parts + [0.0, 0.0])[:3]
    else:  # MM, MM:SS, HH:MM:SS
        h, m, s = [0.0, *parts, 0.0][:3] if len(parts) < 3 else parts
    return d * 1440 + h * 60 + m + s / 60


def _gpus(gres: str) -> int:
    """GPUs in a GRES string (``gpu:1``, ``gpu:a100:4(S:0-1)``, ``gpu:2,shard:8``); 0 without."""
    n = 0
    for item in str(gres or "").split(","):
        fields = item.split("(")[0].split(":")
        if fields[0] == "gpu":
            n += int(fields[-1]) if fields[-1].isdigit() else 1
    return n


def partition_nodes(partition: str | None, env: Mapping[str, str] | None = None) -> list[dict] | None:
    """The nodes of ``partition`` (None: the default one) as ``sinfo`` reports them.

    Returns
    -------
    list of dict or None
        ``{"node", "cpus", "memory_mb", "gpus", "timelimit_min", "partition"}`` per node; an empty list
        when the partition does not exist; None when ``sinfo`` is not available or failed.
    """
    import shutil
    import subprocess

    if shutil.which("sinfo") is None:
        return None
    argv = ["sinfo", "--noheader", "--Node", "--format=%N|%c|%m|%G|%l|%P"]
    if partition:
        argv += ["--partition", str(partition)]
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env=None if env is None else dict(env)
        )
    except (subprocess.SubprocessError, OSError):
        return None
    if out.returncode != 0:
        return [] if "invalid partition" in out.stderr.lower() else None
    nodes = []
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6:
            continue
        name, cpus, mem, gres, limit, part = parts
        if not partition and not part.endswith("*"):  # the default partition is starred
            continue
        nodes.append(
            {
                "node": name,
                "cpus": int(cpus) if cpus.isdigit() else None,
                "memory_mb": _megabytes(mem),
                "gpus": _gpus(gres),
                "timelimit_min": _minutes(limit),
                "partition": part.rstrip("*"),
            }
        )
    return nodes


def queue_misfits(qadapter: QueueAdapterBase, env: Mapping[str, str] | None = None) -> list[str]:
    """Why jobs of ``qadapter`` cannot start on its partition, one line each ([] when they fit or when
    ``sinfo`` is not available to tell).

    Checked against the partition's nodes (``sinfo``): CPUs (``ntasks`` × ``cpus_per_task`` on one
    node), ``mem``, GPUs (``gres``/``gpus``) and ``walltime``. Slurm would keep such a job PENDING
    (reason ``PartitionConfig``) for ever, or refuse it.
    """
    partition = qadapter.get("partition")
    nodes = partition_nodes(partition, env)
    where = f"partition {partition!r}" if partition else "the default partition"
    if nodes is None:
        return []
    if not nodes:
        return [f"{where} does not exist on this cluster (sinfo lists it not)"]
    out = []
    n_nodes = int(qadapter.get("nodes") or 1)
    cpus = int(qadapter.get("ntasks") or 1) * int(qadapter.get("cpus_per_task") or 1) / max(n_nodes, 1)
    best_cpus = max((n["cpus"] or 0) for n in nodes)
    if best_cpus and cpus > best_cpus:
        out.append(
            f"cpus_per_task × ntasks = {cpus:g} CPUs per node, but the nodes of {where} have at most {best_cpus}"
        )
    mem = _megabytes(qadapter.get("mem") or "")
    best_mem = max((n["memory_mb"] or 0.0) for n in nodes)
    if mem is not None and best_mem and mem > best_mem:
        out.append(f"mem = {qadapter.get('mem')}, but the nodes of {where} have at most {best_mem:.0f} MB")
    gpus = _gpus(qadapter.get("gres") or "") or int(qadapter.get("gpus") or 0)
    best_gpus = max(n["gpus"] for n in nodes)
    if gpus > best_gpus:
        out.append(f"{gpus} GPU(s) per node asked for, but the nodes of {where} have at most {best_gpus}")
    wall, limit = _minutes(qadapter.get("walltime") or ""), nodes[0]["timelimit_min"]
    if wall is not None and limit is not None and wall > limit:
        out.append(f"walltime = {qadapter.get('walltime')}, but {where} allows at most {limit:g} minutes")
    return out
