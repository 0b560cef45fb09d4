"""A real single-node Slurm cluster for tests and demos, started as root without systemd.

Debian's ``slurm-wlm`` (22.05) and ``munge`` packages provide the daemons; this module writes a
``slurm.conf`` into a state directory, starts ``munged`` (unless one already answers), ``slurmctld`` and
``slurmd``, waits until ``sinfo`` shows the node idle, and stops on teardown only the daemons it started,
by the PIDs in their pid files. The node is this machine (``hostname -s``) with all its CPUs; partitions
``cpu`` (default) and ``gpu`` share it, and the node declares one fake ``gpu`` GRES (device file
``/dev/null``: scheduling only) so job scripts that ask for ``--gres=gpu:1`` run unchanged.

Client commands (``sbatch``, ``squeue``, ``sinfo``) find the cluster through ``SLURM_CONF``:
:meth:`SlurmTestbed.start` sets it in ``os.environ`` (and :meth:`stop` restores it), so jobs submitted
from this process and their children see the same cluster.

Finished jobs are recorded one line each in ``jobcomp.txt`` (``JobCompType=jobcomp/filetxt``), read by
:meth:`SlurmTestbed.jobcomp_records`: a light record of what ran where, without ``slurmdbd``.

Command line (leaves the cluster running for interactive use)::

    python -m aso_workflows.testing.slurm_testbed start [--dir DIR]   # prints: export SLURM_CONF=...
    python -m aso_workflows.testing.slurm_testbed status [--dir DIR]
    python -m aso_workflows.testing.slurm_testbed stop [--dir DIR]    # stops the daemons recorded in DIR
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SlurmTestbed", "JobCompRecord", "parse_jobcomp", "testbed_unavailable_reason", "DEFAULT_DIR"]

DEFAULT_DIR = Path("/tmp/aso-slurm-testbed")
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
_DAEMONS = ("munged", "slurmctld", "slurmd")
_CLIENTS = ("sbatch", "squeue", "sinfo", "scancel", "munge", "unmunge")
_MUNGE_PIDFILE = Path("/run/munge/munged.pid")


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN:
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def _require(name: str) -> str:
    """The path of Slurm/munge program ``name`` (:func:`testbed_unavailable_reason` checked it exists)."""
    path = _which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH or in {', '.join(_SBIN)}")
    return path


def testbed_unavailable_reason() -> str | None:
    """Why a testbed cannot be started here (not root, binaries missing), or None if it can."""
    if os.name != "posix" or os.geteuid() != 0:
        return "the Slurm testbed must run as root (it starts munged, slurmctld and slurmd)"
    missing = [name for name in _DAEMONS + _CLIENTS if _which(name) is None]
    if missing:
        return f"Slurm/munge binaries missing: {', '.join(missing)} (apt-get install -y slurm-wlm munge)"
    if not Path("/etc/munge/munge.key").exists():
        return "/etc/munge/munge.key is missing (the munge package creates it)"
    return None


@dataclass
class JobCompRecord:
    """One finished job from the ``jobcomp/filetxt`` file (all fields are kept in ``fields``)."""

    job_id: str
    state: str
    partition: str
    start: str
    end: str
    nodes: str
    name: str
    fields: dict[str, str]


# Each line is "Key=value Key=value ..."; a value may contain spaces (WorkDir, Name), so a value runs
# up to the next " Key=" (Slurm's keys are CamelCase words).
_KV = re.compile(r"(\w+)=(.*?)(?= \w+=|$)")


def parse_jobcomp(text: str) -> list[JobCompRecord]:
    """Parse the text of a ``jobcomp/filetxt`` file, one :class:`JobCompRecord` per non-empty line."""
    out = []
    for line in text.splitlines():
        fields = dict(_KV.findall(line.strip()))
        if "JobId" not in fields:
            continue
        out.append(
            JobCompRecord(
                job_id=fields["JobId"],
                state=fields.get("JobState", ""),
                partition=fields.get("Partition", ""),
                start=fields.get("StartTime", ""),
                end=fields.get("EndTime", ""),
                nodes=fields.get("NodeList", ""),
                name=fields.get("Name", ""),
                fields=fields,
            )
        )
    return out


@dataclass
class SlurmTestbed:
    """A single-node Slurm cluster whose config, state, logs and pid files live in ``directory``.

    Attributes
    ----------
    directory
        State directory (created). Reusing the same directory finds a running testbed again.
    cpus
        CPUs of the node; default: all of this machine's (``os.cpu_count()``).
    slurmctld_port, slurmd_port
        TCP ports of the daemons (Slurm's defaults).
    start_timeout
        Seconds to wait for ``sinfo`` to show the node idle.
    """

    directory: Path = DEFAULT_DIR
    cpus: int | None = None
    slurmctld_port: int = 6817
    slurmd_port: int = 6818
    start_timeout: float = 60.0
    _owned: list[tuple[str, Path]] = field(default_factory=list, init=False, repr=False)
    _old_slurm_conf: str | None = field(default=None, init=False, repr=False)
    _env_set: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        self.host = socket.gethostname().split(".")[0]

    # ---- paths --------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        """The ``slurm.conf`` of this testbed (what ``SLURM_CONF`` points to)."""
        return self.directory / "slurm.conf"

    @property
    def jobcomp_file(self) -> Path:
        return self.directory / "jobcomp.txt"

    def _pidfile(self, daemon: str) -> Path:
        return _MUNGE_PIDFILE if daemon == "munged" else self.directory / f"{daemon}.pid"

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands: ``os.environ`` with ``SLURM_CONF`` set to this testbed."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ---- config -------------------------------------------------------------------------------
    def slurm_conf_text(self) -> str:
        """The ``slurm.conf``: one node, partitions ``cpu`` (default) and ``gpu``, munge auth, no accounting database (finished jobs go to a jobcomp file), plus a fake gpu GRES."""
        d = self.directory
        cpus = self.cpus or os.cpu_count() or 1
        mem_mb = max(_mem_total_mb() * 9 // 10, 100)  # below the physical size or slurmd drains the node
        return "\n".join(
            [
                "# Written by aso_workflows.testing.slurm_testbed: a single-node test cluster.",
                "ClusterName=asotestbed",
                # addresses given explicitly: no dependence on the host name resolving (containers)
                f"SlurmctldHost={self.host}(127.0.0.1)",
                f"SlurmctldPort={self.slurmctld_port}",
                f"SlurmdPort={self.slurmd_port}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                "MpiDefault=none",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "SchedulerType=sched/backfill",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/filetxt",
                f"JobCompLoc={self.jobcomp_file}",
                "ReturnToService=2",
                "KillWait=5",
                "InactiveLimit=0",
                f"StateSaveLocation={d / 'state'}",
                f"SlurmdSpoolDir={d / 'spool'}",
                f"SlurmctldPidFile={self._pidfile('slurmctld')}",
                f"SlurmdPidFile={self._pidfile('slurmd')}",
                f"SlurmctldLogFile={d / 'slurmctld.log'}",
                f"SlurmdLogFile={d / 'slurmd.log'}",
                "GresTypes=gpu",
                f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Gres=gpu:1 State=UNKNOWN",
                f"PartitionName=cpu Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
                f"PartitionName=gpu Nodes={self.host} MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def _write_config(self) -> None:
        for sub in ("state", "spool"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.slurm_conf_text())
        # gres.conf is read from the directory of slurm.conf. slurmd drops a GPU without a device file
        # ("Removing file-less GPU"), so the fake GPU is /dev/null: scheduling only (task/none, no cgroups).
        (self.directory / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File=/dev/null\n")

    # ---- state --------------------------------------------------------------------------------
    def running(self, daemon: str) -> int | None:
        """PID of ``daemon`` if its pid file names a live process of that name, else None."""
        return _live_pid(self._pidfile(daemon), daemon)

    def _munge_works(self) -> bool:
        munge, unmunge = _which("munge"), _which("unmunge")
        if munge is None or unmunge is None:
            return False
        try:
            cred = subprocess.run([munge, "-n"], capture_output=True, timeout=10, check=True).stdout
            subprocess.run([unmunge], input=cred, capture_output=True, timeout=10, check=True)
            return True
        except (subprocess.SubprocessError, OSError):
            return False

    def node_state(self) -> str | None:
        """The node's state as ``sinfo`` reports it (``idle``, ``mix``, ``alloc``, ...), or None."""
        try:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=10, env=self.env
            )
        except (subprocess.SubprocessError, OSError):
            return None
        if out.returncode != 0 or not out.stdout.strip():
            return None
        return out.stdout.split()[0].rstrip("*~#!%$@^-")

    # ---- start / stop -------------------------------------------------------------------------
    def start(self) -> SlurmTestbed:
        """Start munged, slurmctld and slurmd (each only if not already running) and wait for ``idle``.

        Daemons found running are reused and never stopped by this instance.
        """
        reason = testbed_unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._set_env()
        try:
            self._start()
        except BaseException:
            self.stop()  # what this call started; nothing else
            raise
        return self

    def _start(self) -> None:
        if not self._munge_works():
            self._start_munged()
        have_ctld = self.running("slurmctld") is not None
        have_d = self.running("slurmd") is not None
        if not (have_ctld and have_d):
            if not have_ctld and not have_d:
                self._write_config()
            if not have_ctld:
                # -c: a clean start; a previous crashed run's jobs are not recovered
                self._spawn("slurmctld", [_require("slurmctld"), "-f", str(self.conf), "-c"])
            if not have_d:
                self._spawn("slurmd", [_require("slurmd"), "-f", str(self.conf), "-c"])
        self._wait_idle()

    def _set_env(self) -> None:
        if not self._env_set:
            self._old_slurm_conf = os.environ.get("SLURM_CONF")
            os.environ["SLURM_CONF"] = str(self.conf)
            self._env_set = True

    def _start_munged(self) -> None:
        run_dir = _MUNGE_PIDFILE.parent
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.chown(run_dir, "munge", "munge")
        for d in ("/var/log/munge", "/var/lib/munge"):
            if os.path.isdir(d):
                shutil.chown(d, "munge", "munge")
        # munged refuses to run as root: start it as the munge user the package created
        self._spawn("munged", ["su", "-s", "/bin/sh", "munge", "-c", _require("munged")])
        # remember that this testbed started it, for `stop(include_reused=True)` from another process
        (self.directory / "munged.started").write_text(str(self.running("munged")))
        deadline = time.monotonic() + 10
        while not self._munge_works():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "munged started but munge/unmunge do not work (see /var/log/munge/munged.log)"
                )
            time.sleep(0.2)

    def _spawn(self, daemon: str, argv: list[str]) -> None:
        """Run a self-daemonising command and wait for its pid file; the daemon is then owned."""
        pidfile = self._pidfile(daemon)
        if pidfile.exists() and self.running(daemon) is None:
            pidfile.unlink()  # stale, from a crashed run
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            timeout=30,
        )
        deadline = time.monotonic() + 15
        while self.running(daemon) is None:
            if time.monotonic() > deadline or proc.returncode != 0:
                raise RuntimeError(
                    f"{daemon} did not start: {proc.stderr.strip()[-300:]} {self._log_tail(daemon)}"
                )
            time.sleep(0.1)
        self._owned.append((daemon, pidfile))

    def _log_tail(self, daemon: str, n: int = 5) -> str:
        log = self.directory / f"{daemon}.log"
        if not log.exists():
            return ""
        lines = log.read_text(errors="replace").splitlines()[-n:]
        return f"(last lines of {log}: {' | '.join(lines)})"

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        state = None
        while time.monotonic() < deadline:
            state = self.node_state()
            if state in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"Slurm node {self.host} not idle after {self.start_timeout:g} s (state {state}) "
            f"{self._log_tail('slurmctld')} {self._log_tail('slurmd')}"
        )

    def stop(self, include_reused: bool = False) -> None:
        """Cancel this cluster's jobs and stop the daemons this instance started (by PID).

        Parameters
        ----------
        include_reused
            Also stop slurmctld/slurmd found running from this directory's config (their command line
            names this ``slurm.conf``), and a munged that a testbed of this directory started (its PID
            is in ``munged.started``); used by ``python -m aso_workflows.testing.slurm_testbed stop``. Daemons
            started by anything else are never stopped.
        """
        targets = list(self._owned)
        if include_reused:
            for daemon in ("slurmd", "slurmctld"):
                pid = self.running(daemon)
                if pid and str(self.conf) in _cmdline(pid) and (daemon, self._pidfile(daemon)) not in targets:
                    targets.append((daemon, self._pidfile(daemon)))
            started = self.directory / "munged.started"
            pid = self.running("munged")
            mine = started.exists() and started.read_text().strip() == str(pid)
            if pid and mine and ("munged", _MUNGE_PIDFILE) not in targets:
                targets.append(("munged", _MUNGE_PIDFILE))
        if any(d == "slurmctld" for d, _ in targets):
            self._cancel_all_jobs()
        # slurmd first, then slurmctld, then munged (which they use to authenticate)
        order = {"slurmd": 0, "slurmctld": 1, "munged": 2}
        for daemon, pidfile in sorted(targets, key=lambda t: order[t[0]]):
            pid = _live_pid(pidfile, daemon)
            if pid is not None:
                _terminate(pid)
            if daemon == "munged":
                (self.directory / "munged.started").unlink(missing_ok=True)
        self._owned.clear()
        if self._env_set:
            if self._old_slurm_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = self._old_slurm_conf
            self._env_set = False

    def _cancel_all_jobs(self) -> None:
        try:
            out = subprocess.run(
                ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10, env=self.env
            )
            ids = out.stdout.split()
            if ids:
                subprocess.run(["scancel", *ids], capture_output=True, timeout=10, env=self.env)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    left = subprocess.run(
                        ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10, env=self.env
                    ).stdout.split()
                    if not left:
                        break
                    time.sleep(0.5)
        except (subprocess.SubprocessError, OSError):
            pass

    def __enter__(self) -> SlurmTestbed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- records ------------------------------------------------------------------------------
    def jobcomp_records(self) -> list[JobCompRecord]:
        """Finished jobs recorded by ``jobcomp/filetxt`` (empty if none finished yet)."""
        if not self.jobcomp_file.exists():
            return []
        return parse_jobcomp(self.jobcomp_file.read_text(errors="replace"))


def _mem_total_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1000


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _live_pid(pidfile: Path, name: str) -> int | None:
    """The PID in ``pidfile`` if that process is alive and is ``name`` (guards against reused PIDs)."""
    try:
        pid = int(Path(pidfile).read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == name else None


def _terminate(pid: int, wait: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m aso_workflows.testing.slurm_testbed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help=f"state directory (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    bed = SlurmTestbed(Path(args.dir))
    if args.command == "start":
        bed.start()
        print(f"export SLURM_CONF={bed.conf}")
    elif args.command == "stop":
        bed.stop(include_reused=True)
        print(f"stopped the Slurm testbed of {bed.directory}")
    else:
        os.environ["SLURM_CONF"] = str(bed.conf)
        print(
            f"slurmctld pid {bed.running('slurmctld')}, slurmd pid {bed.running('slurmd')}, "
            f"node {bed.host}: {bed.node_state()}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
