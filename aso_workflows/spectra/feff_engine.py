"""Running FEFF in a directory that holds ``feff.inp``: feff10-rs (default) or an external executable.

Both engines run FEFF in a child process whose output goes to ``feff.log`` in the directory, with an
optional wall-clock timeout that kills the whole process group (FEFF's stage workers included), so a
stuck run never hangs a campaign. Failures raise :class:`~aso_workflows.errors.SimulationError` with
one line naming the directory and the reason (the engine's error and the last lines of FEFF's log).

feff10-rs is run through ``python -c`` rather than in-process although it already starts one worker
per FEFF stage: FEFF's chatter is written to the process's file descriptor 1 (``contextlib``
redirection does not catch it), and ``FeffConfig.stage_timeout`` limits each stage, not the run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from aso_workflows.errors import InputError, SimulationError

__all__ = [
    "FEFF_LOG",
    "FeffEngine",
    "Feff10RsEngine",
    "ExternalFeffEngine",
    "make_engine",
    "log_tail",
]

FEFF_LOG = "feff.log"
"""File (in the run directory) that receives FEFF's standard output and error."""

# Runs feff10-rs in the child process. A FeffError becomes one line on stderr and exit status 3.
_FEFF10RS_SCRIPT = """
import sys
import feff10
try:
    feff10.run("feff.inp", ".")
except feff10.FeffError as exc:
    first = (str(exc).strip().splitlines() or [""])[0]
    print("ASO-FEFF-ERROR " + type(exc).__name__ + ": " + first, file=sys.stderr, flush=True)
    sys.exit(3)
"""


def log_tail(directory: str | Path, n: int = 4, max_chars: int = 300) -> str:
    """The last ``n`` non-empty lines of FEFF's log in ``directory``, joined with `` | ``.

    Reads :data:`FEFF_LOG`, else FEFF's own ``log.dat``; ``""`` when neither exists.
    """
    for name in (FEFF_LOG, "log.dat"):
        p = Path(directory) / name
        if p.is_file():
            lines = [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
            text = " | ".join(lines[-n:])
            return text if len(text) <= max_chars else "…" + text[-max_chars:]
    return ""


def _run_child(
    argv: list[str], directory: Path, timeout: float | None, label: str, what: str
) -> tuple[int, str]:
    """Run ``argv`` in ``directory`` (stdout to :data:`FEFF_LOG`); returns (exit status, stderr).

    The child gets its own session so that a timeout (or an interrupt of this process) kills it and
    every process it started.
    """
    log = directory / FEFF_LOG
    with open(log, "w") as out:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise SimulationError(f"{label} could not start {what} in {directory}: {exc}") from None
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            tail = log_tail(directory)
            raise SimulationError(
                f"{label} timed out after {timeout:g} s for {what} in {directory}"
                + (f"; last log lines: {tail}" if tail else "")
            ) from None
        except BaseException:
            _kill_group(proc)
            raise
    return proc.returncode, err or ""


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()


class FeffEngine(ABC):
    """Something that runs FEFF on the ``feff.inp`` of a directory and leaves its outputs there."""

    name: str = ""

    @abstractmethod
    def run(self, directory: str | Path, timeout: float | None = None, what: str = "FEFF run") -> None:
        """Run FEFF in ``directory``.

        Parameters
        ----------
        directory
            Holds ``feff.inp``; FEFF writes ``xmu.dat``, ``chi.dat``, logs ... there.
        timeout
            Wall-clock limit in seconds for the whole run (``None``: no limit).
        what
            Names the run in error messages, e.g. ``"site 3 (Ni K)"``.

        Raises
        ------
        SimulationError
            FEFF failed, timed out or could not start (one line: directory and reason).
        InputError
            On field ``engine`` when the engine is not usable here.
        """

    @abstractmethod
    def version(self) -> str:
        """Name and version, e.g. ``"feff10-rs 0.2.4"``."""

    def _check_input(self, directory: Path, what: str) -> None:
        if not (directory / "feff.inp").is_file():
            raise SimulationError(f"{self.name} cannot run {what} in {directory}: no feff.inp there")


@dataclass
class Feff10RsEngine(FeffEngine):
    """FEFF 10 through the ``feff10-rs`` Python package (``feff10.run``), in a child Python process.

    Parameters
    ----------
    python
        Interpreter that imports ``feff10`` (default: this one).
    """

    python: str = sys.executable
    name = "feff10-rs"

    def version(self) -> str:
        try:
            return f"feff10-rs {metadata.version('feff10-rs')}"
        except metadata.PackageNotFoundError:
            return "feff10-rs"

    def run(self, directory: str | Path, timeout: float | None = None, what: str = "FEFF run") -> None:
        d = Path(directory).resolve()
        self._check_input(d, what)
        rc, err = _run_child([self.python, "-c", _FEFF10RS_SCRIPT], d, timeout, self.name, what)
        if rc == 0:
            return
        lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
        marked = [ln[len("ASO-FEFF-ERROR ") :] for ln in lines if ln.startswith("ASO-FEFF-ERROR ")]
        if marked:
            reason = marked[-1]
        elif any("No module named" in ln and "feff10" in ln for ln in lines):
            raise InputError("engine", f"feff10-rs does not import in {self.python}; pip install feff10-rs")
        else:
            reason = lines[-1] if lines else f"exit status {rc}"
        tail = log_tail(d)
        raise SimulationError(
            f"{self.name} failed for {what} in {d}: {reason}" + (f"; last log lines: {tail}" if tail else "")
        )


@dataclass
class ExternalFeffEngine(FeffEngine):
    """A FEFF executable of the user's own (``feff``, ``feff10``, ``feff85l``, ``feff8l`` ...).

    It is run with no arguments in the directory holding ``feff.inp``, which is how FEFF 6–10 and
    their wrapper scripts are used. Many FEFF builds exit with status 0 even when a module failed, so
    the caller must also check that the expected output file exists.

    Parameters
    ----------
    command
        Path of the executable, or a name found on ``PATH``.
    """

    command: str

    name = "external FEFF"

    def executable(self) -> str:
        """The resolved path of :attr:`command`.

        Raises
        ------
        InputError
            On field ``engine`` if it is not an executable file (nor a name on ``PATH``).
        """
        cmd = str(self.command)
        path = shutil.which(cmd) if os.sep not in cmd else (cmd if os.access(cmd, os.X_OK) else None)
        if path is None or not Path(path).is_file():
            raise InputError(
                "engine",
                f"FEFF executable {cmd!r} not found or not executable "
                "(expected 'feff10-rs' or the path of a FEFF executable such as feff, feff10, feff85l, feff8l)",
            )
        return str(Path(path).resolve())

    def version(self) -> str:
        return f"external FEFF {self.command}"

    def run(self, directory: str | Path, timeout: float | None = None, what: str = "FEFF run") -> None:
        exe = self.executable()
        d = Path(directory).resolve()
        self._check_input(d, what)
        rc, err = _run_child([exe], d, timeout, f"FEFF ({exe})", what)
        if rc != 0:
            lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
            tail = " | ".join(lines[-2:]) if lines else log_tail(d)
            raise SimulationError(
                f"FEFF ({exe}) failed for {what} in {d}: exit status {rc}" + (f"; {tail}" if tail else "")
            )


def make_engine(engine: str | FeffEngine) -> FeffEngine:
    """``"feff10-rs"`` → :class:`Feff10RsEngine`; anything else is a path/name of an executable."""
    if isinstance(engine, FeffEngine):
        return engine
    spec = str(engine).strip()
    if not spec:
        raise InputError("engine", "empty; expected 'feff10-rs' or the path of a FEFF executable")
    if spec.lower() in ("feff10-rs", "feff10rs"):
        return Feff10RsEngine()
    return ExternalFeffEngine(spec)
