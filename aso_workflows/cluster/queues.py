"""Queue adapters: FireWorks' ``CommonAdapter`` on the Slurm templates in ``slurm_templates/``.

One queue per FireWorks category: the same ``my_qadapter_cpu.yaml`` / ``my_qadapter_gpu.yaml`` serve
``qlaunch`` (online mode) and :class:`~aso_workflows.cluster.offline.SlurmOfflineExecutor` (offline
mode), and the job script is always rendered by FireWorks from the user's template (placeholders
``$${name}``; a line whose placeholder has no value is dropped).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aso_workflows.errors import InputError

if TYPE_CHECKING:
    from fireworks.queue.queue_adapter import QueueAdapterBase
    from fireworks.user_objects.queue_adapters.common_adapter import CommonAdapter

__all__ = ["TEMPLATES_DIR", "template_path", "slurm_queue", "load_queue_adapter", "render_script"]

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
