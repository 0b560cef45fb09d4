"""A real MongoDB-wire-protocol server for tests, demos and benchmarks: FerretDB v1 on SQLite.

No MongoDB server installs here (no Debian package, wheel or npm binary; ``docs/cluster.md``). FerretDB
v1.24 is a Go module the Go module proxy serves: :func:`build` compiles it once (about 10 s when Go's
module and build caches are warm, a minute from cold) into ``~/.cache/aso-workflows/`` and
:class:`FerretDB` runs it on 127.0.0.1 with its data in a folder of its own, SCRAM authentication on
(``--test-enable-new-auth``, one user made at start), optionally TLS, and stops it by its PID.

Two builds:

- ``stock``: FerretDB v1.24.2 as released (``go install`` of that version panics at start — "Invalid
  build/version/version.txt file content" — because the module copy lacks the generated version file;
  :func:`build` writes it, nothing else changes);
- ``patched`` (the default for the test tier): the same plus the two changes in :data:`PATCHES`, each
  closing a gap between FerretDB 1.x and what MongoDB guarantees and FireWorks, jobflow and the campaign
  store rely on:

  - ``nested-arrays``: FerretDB 1.x refuses every document holding an array inside an array
    (``invalid value: ... (nested arrays are not supported)``, code 2), which MongoDB stores and which a
    pymatgen structure's ``lattice.matrix`` and jobflow's ``function_args`` are; the patch removes that
    one check (storage and queries of such documents then work: ``tests/test_mongodb_server.py``). On
    the stock build a campaign stops with one line naming the refused document (also tested);
  - ``atomic-writes``: FerretDB 1.x applies an update or findAndModify as a read, a change in Go and a
    write-back in another transaction, so two clients writing one document at once can lose an update;
    MongoDB makes each single-document write atomic, and FireWorks' workflow lock and its launch
    completion (with ``rlaunch``'s ping thread) depend on that. The patch runs the write commands one
    at a time.

  See the compatibility table in ``docs/cluster.md``.

Command line (for CI and the walk-through in ``docs/cluster.md``)::

    python -m aso_workflows.testing.ferretdb build [--stock]     # prints the binary's path
    python -m aso_workflows.testing.ferretdb start --dir DIR     # prints: export ASO_TEST_MONGODB_URI=...
                                  # (and writes DIR/my_launchpad.yaml, DIR/password for the walk-through)
    python -m aso_workflows.testing.ferretdb stop --dir DIR      # stops the server recorded in DIR
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

__all__ = [
    "VERSION",
    "MODULE",
    "NESTED_ARRAYS_PATCH",
    "CACHE_DIR",
    "build",
    "unavailable_reason",
    "free_port",
    "FerretDB",
]

VERSION = "v1.24.2"
MODULE = "github.com/FerretDB/FerretDB"
CACHE_DIR = Path(os.environ.get("ASO_CACHE_DIR", Path.home() / ".cache" / "aso-workflows"))

# What the "patched" build changes in FerretDB v1.24.2: {name: [(file, text there, replacement)]}; a file
# whose "text there" is None is created. See the module docstring and docs/cluster.md.
_WRITE_LOCK = "\tasoWriteMu.Lock() // aso-workflows test build: one write at a time (document atomicity)\n\tdefer asoWriteMu.Unlock()\n\n"
PATCHES: dict[str, list[tuple[str, str | None, str]]] = {
    # MongoDB stores arrays of arrays (pymatgen lattices, jobflow arguments); FerretDB 1.x refuses them
    "nested-arrays": [
        (
            "internal/types/document_validation.go",
            """				case *Array:
					return newValidationError(ErrValidation, fmt.Errorf(
						"invalid value: { %q: %v } (nested arrays are not supported)", key, FormatAnyValue(value),
					))
""",
            """				case *Array:
					// aso-workflows test build: arrays of arrays are accepted, as MongoDB does
""",
        )
    ],
    # MongoDB applies each single-document write atomically; FerretDB 1.x reads the documents, changes them
    # in Go and writes them back in a separate transaction, so two clients updating one document at once
    # can lose an update (FireWorks' workflow lock and launch completion, the campaign's counters). The
    # test build runs insert/update/delete/findAndModify one at a time.
    "atomic-writes": [
        (
            "internal/handler/aso_write_lock.go",
            None,
            'package handler\n\nimport "sync"\n\n// asoWriteMu serialises the write commands '
            "(aso-workflows test build).\nvar asoWriteMu sync.Mutex\n",
        ),
        *[
            (
                f"internal/handler/msg_{cmd.lower()}.go",
                f"func (h *Handler) Msg{cmd}(connCtx context.Context, msg *wire.OpMsg) (*wire.OpMsg, error) {{\n",
                f"func (h *Handler) Msg{cmd}(connCtx context.Context, msg *wire.OpMsg) (*wire.OpMsg, error) {{\n"
                + _WRITE_LOCK,
            )
            for cmd in ("Insert", "Update", "Delete", "FindAndModify")
        ],
    ],
}
NESTED_ARRAYS_PATCH = PATCHES["nested-arrays"][0]


def unavailable_reason() -> str | None:
    """Why FerretDB cannot be built here (no ``go``), or None when it can (or a built binary is cached)."""
    if any(_binary_path(kind).is_file() for kind in ("patched", "stock")):
        return None
    if shutil.which("go") is None:
        return "go is not installed: the FerretDB test server (a Go module) cannot be built"
    return None


def _binary_path(kind: str) -> Path:
    if kind == "patched":  # a change of the patches is a new build
        digest = hashlib.sha1(json.dumps(PATCHES, sort_keys=True).encode()).hexdigest()[:8]
        kind = f"patched-{digest}"
    return CACHE_DIR / f"ferretdb-{VERSION}-{kind}" / "ferretdb"


def build(kind: str = "patched", log: Callable[[str], object] | None = None) -> Path:
    """Build FerretDB (``"patched"`` or ``"stock"``, see the module docstring) once; returns the binary.

    The binary is cached under :data:`CACHE_DIR`; a later call returns it at once.

    Raises
    ------
    RuntimeError
        ``go`` is missing, the module cannot be downloaded, or the build fails (with go's last lines).
    """
    if kind not in ("patched", "stock"):
        raise ValueError(f"kind must be 'patched' or 'stock', got {kind!r}")
    binary = _binary_path(kind)
    if binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(unavailable_reason() or "go not found")
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "CGO_ENABLED": os.environ.get("CGO_ENABLED", "1")}
    done = subprocess.run(
        [go, "mod", "download", "-json", f"{MODULE}@{VERSION}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"go mod download {MODULE}@{VERSION} failed: {_tail(done.stdout + done.stderr)}")
    source = Path(json.loads(done.stdout)["Dir"])
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ferretdb-src-", dir=binary.parent) as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(source, src)
        for p in [src, *src.rglob("*")]:  # the module cache is read-only
            p.chmod(p.stat().st_mode | 0o200)
        # `go install ...@v1.24.2` panics at start: the version file is generated by their build tooling
        (src / "build" / "version" / "version.txt").write_text(VERSION + "\n")
        if kind == "patched":
            for name, changes in PATCHES.items():
                for rel, old, new in changes:
                    path = src / rel
                    if old is None:
                        path.write_text(new)
                        continue
                    text = path.read_text()
                    if text.count(old) != 1:
                        raise RuntimeError(f"the {name} patch does not apply to {rel} of FerretDB {VERSION}")
                    path.write_text(text.replace(old, new))
        if log:
            log(f"building FerretDB {VERSION} ({kind}) into {binary} ...")
        out = Path(tmp) / "ferretdb"
        done = subprocess.run(
            [go, "build", "-trimpath", "-o", str(out), "./cmd/ferretdb"],
            cwd=src,
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"go build of FerretDB {VERSION} failed: {_tail(done.stdout + done.stderr)}")
        os.replace(out, binary)  # atomic: a concurrent build never sees half a binary
    return binary


def _tail(text: str, n: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-n:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FerretDB:
    """One FerretDB server on 127.0.0.1 with its SQLite data in ``root/data``.

    Attributes
    ----------
    root
        Folder of this server: ``data/`` (the databases; kept across :meth:`restart`), ``state/``,
        ``ferretdb.log``, ``ferretdb.json`` (PID, port, URI for the command line's ``stop``).
    port
        TCP port (0: a free one, chosen at the first start and kept across restarts).
    username, password
        The user created at start (SCRAM-SHA-256, authentication database ``admin``); None: no
        authentication at all.
    tls_cert, tls_key, tls_ca
        PEM files: with a certificate and key the server listens with TLS only (``tls_ca``: clients must
        present a certificate signed by it).
    client_ca
        The CA file clients trust the server's certificate with (used here to check it answers).
    kind
        ``"patched"`` or ``"stock"`` build (:func:`build`).
    """

    root: Path
    port: int = 0
    username: str | None = "aso"
    password: str | None = field(default_factory=lambda: secrets.token_hex(12), repr=False)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    client_ca: Path | None = None
    kind: str = "patched"
    binary: Path | None = None
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # ---- addresses ------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def uri(self, database: str = "", with_password: bool = True) -> str:
        """``mongodb://aso:<pw>@127.0.0.1:<port>/<database>?authSource=admin`` (``&tls=true`` with TLS)."""
        auth = ""
        if self.username:
            auth = quote_plus(self.username)
            if with_password and self.password:
                auth += ":" + quote_plus(self.password)
            auth += "@"
        query = ["authSource=admin"] if self.username else []
        if self.tls:
            query.append("tls=true")
        q = "?" + "&".join(query) if query else ""
        return f"mongodb://{auth}{self.host}:{self.port}/{database}{q}"

    # ---- life cycle -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout: float = 60.0) -> FerretDB:
        """Start the server (building it if needed) and wait until it answers a ping."""
        if self.pid is not None:
            return self
        self.binary = Path(self.binary) if self.binary else build(self.kind)
        if not self.port:
            self.port = free_port()
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.root / 'data'}/",
            f"--state-dir={self.root / 'state'}",
            "--telemetry=disable",
            f"--debug-addr=127.0.0.1:{free_port()}",
            "--log-level=warn",
        ]
        if self.tls:
            args += [
                "--listen-addr=",
                f"--listen-tls=127.0.0.1:{self.port}",
                f"--listen-tls-cert-file={self.tls_cert}",
                f"--listen-tls-key-file={self.tls_key}",
            ]
            if self.tls_ca:
                args.append(f"--listen-tls-ca-file={self.tls_ca}")
        else:
            args.append(f"--listen-addr=127.0.0.1:{self.port}")
        if self.username:
            args += [
                "--test-enable-new-auth",
                f"--setup-username={self.username}",
                f"--setup-password={self.password}",
                "--setup-database=admin",
            ]
        log = open(self.root / "ferretdb.log", "ab")  # noqa: SIM115 - kept open by the child
        try:
            # its own session: a Ctrl-C in the terminal of a test run does not reach the server first
            self._proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            log.close()
        (self.root / "ferretdb.json").write_text(
            json.dumps({"pid": self._proc.pid, "port": self.port, "uri": self.uri(with_password=False)})
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the server answers an authenticated ping; RuntimeError with its log's tail if not."""
        import pymongo
        from pymongo.errors import PyMongoError

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                with pymongo.MongoClient(self.uri(), serverSelectionTimeoutMS=1000, **self.client_tls()) as c:
                    c.admin.command("ping")
                return
            except PyMongoError as exc:
                last = str(exc).splitlines()[0][:200]
                time.sleep(0.2)
        log = (
            (self.root / "ferretdb.log").read_text(errors="replace")
            if (self.root / "ferretdb.log").is_file()
            else ""
        )
        raise RuntimeError(f"FerretDB did not answer on port {self.port} ({last}); log: {_tail(log)}")

    def client_tls(self) -> dict:
        """pymongo options that trust this server's certificate (``tlsCAFile``), when it uses TLS."""
        return {"tlsCAFile": str(self.client_ca)} if self.tls and self.client_ca else {}

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); its data stay in ``root/data``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same port with the same data."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def __enter__(self) -> FerretDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_client_files(server: FerretDB, folder: Path) -> None:
    """``folder/password`` (mode 600) and ``folder/my_launchpad.yaml`` (database ``fireworks``) for ``server``."""
    import yaml

    folder = Path(folder)
    (folder / "password").write_text((server.password or "") + "\n")
    (folder / "password").chmod(0o600)
    lp = {
        "host": server.host,
        "port": server.port,
        "name": "fireworks",
        "username": server.username,
        "password": server.password,
        "authsource": "admin" if server.username else None,
        "mongoclient_kwargs": {
            "serverSelectionTimeoutMS": 5000,
            **({"tls": True, **server.client_tls()} if server.tls else {}),
        },
        "strm_lvl": "WARNING",
    }
    (folder / "my_launchpad.yaml").write_text(yaml.safe_dump(lp))
    (folder / "my_launchpad.yaml").chmod(0o600)


def _stop_recorded(root: Path) -> str:
    info = root / "ferretdb.json"
    if not info.is_file():
        return f"no FerretDB recorded in {root}"
    pid = json.loads(info.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        info.unlink()
        return f"FerretDB (pid {pid}) was not running"
    for _ in range(150):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    info.unlink()
    return f"stopped FerretDB (pid {pid})"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m aso_workflows.testing.ferretdb", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build FerretDB once (cached) and print the binary's path")
    b.add_argument("--stock", action="store_true", help="the release as is (no patches)")
    s = sub.add_parser(
        "start",
        help="start a server; prints `export ASO_TEST_MONGODB_URI=...` (and the URI without the password); "
        "writes DIR/my_launchpad.yaml and DIR/password",
    )
    s.add_argument("--dir", required=True, type=Path, help="folder for its data, log and PID")
    s.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)")
    s.add_argument("--stock", action="store_true", help="the release as is (no patches)")
    t = sub.add_parser("stop", help="stop the server recorded in --dir")
    t.add_argument("--dir", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build("stock" if args.stock else "patched", log=lambda m: print(m, file=sys.stderr)))
        elif args.command == "start":
            server = FerretDB(args.dir, port=args.port, kind="stock" if args.stock else "patched")
            server.start()
            server._proc = None  # leave it running after this process exits
            write_client_files(server, args.dir)
            print(f"export ASO_TEST_MONGODB_URI='{server.uri()}'")
            print(f"export ASO_MONGODB_USER_URI='{server.uri(with_password=False)}'")
        else:
            print(_stop_recorded(args.dir), file=sys.stderr)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
