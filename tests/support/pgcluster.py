"""A private PostgreSQL cluster for one test: its own data directory, port and server process.

The shared server at 127.0.0.1:5432 (tests/support/pg.py) cannot be stopped by a test; a test
that restarts the database, or makes a standby and promotes it (docs/operations.md "Production
topology"), runs its own cluster with ``initdb`` and ``pg_ctl`` from the PostgreSQL binaries
(``/usr/lib/postgresql/*/bin``, or ``TRUSTGW_PG_BINDIR``). The server runs as the ``postgres``
user (``runuser`` when the tests run as root: PostgreSQL refuses to run as root), in a temporary
directory it owns, on a free loopback port, with trust authentication for local connections
only. Without the binaries the test is skipped with that reason; under ``CI=true`` it fails.

Every wait is ``pg_ctl -w`` (which returns when the server accepts connections or has stopped)
or ``pg_isready`` with a deadline: no fixed sleeps.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "postgres"
START_TIMEOUT = 60  # seconds: pg_ctl -w gives up after this (a loaded 2-core machine)


def bindir() -> Path | None:
    """The directory of ``initdb``/``pg_ctl``: ``TRUSTGW_PG_BINDIR``, else the newest
    ``/usr/lib/postgresql/N/bin`` that has them; ``None`` when there is none."""
    configured = os.environ.get("TRUSTGW_PG_BINDIR")
    candidates = [Path(configured)] if configured else []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        versions = [p for p in root.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: int(p.name), reverse=True)]
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "psql")):
            return candidate
    return None


def _as_postgres(argv: Sequence[str]) -> list[str]:
    """``argv`` run as the ``postgres`` user when we are root (the server refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *argv]
    return list(argv)


def require_binaries() -> Path:
    """The binaries' directory; skips the test with the reason when they are absent (fails
    under ``CI=true``, where every PostgreSQL test must run)."""
    found = bindir()
    if found is not None and (os.geteuid() != 0 or shutil.which("runuser")):
        return found
    reason = (
        "no PostgreSQL server binaries (initdb, pg_ctl: apt-get install postgresql-15, "
        "or set TRUSTGW_PG_BINDIR)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"under CI every PostgreSQL test must run: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    """One private cluster: ``data`` (its PGDATA), ``port``, and the binaries it runs with."""

    bin: Path
    root: Path  # the temporary directory holding data, socket and log (owned by postgres)
    data: Path
    port: int

    @property
    def log(self) -> Path:
        """The server's log file (read it when a start fails)."""
        return self.root / f"{self.data.name}.log"

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database`` on this cluster (trust auth: no password)."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of the cluster's binaries as the postgres user; raises on failure with its
        output when ``check``."""
        argv = _as_postgres([str(self.bin / tool), *args])
        done = subprocess.run(  # noqa: S603 - our own binaries, no shell
            argv, capture_output=True, text=True, timeout=START_TIMEOUT + 30, check=False
        )
        if check and done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed ({done.returncode}): "
                f"{done.stdout}{done.stderr}\n--- server log ---\n{log}"
            )
        return done

    def start(self) -> None:
        """Start the server and return when it accepts connections (``pg_ctl -w``)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self.run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", str(START_TIMEOUT), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back sessions; ``immediate``: as a crash would)."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(START_TIMEOUT), "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port: every connection is cut."""
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        """Whether the server process is up (``pg_ctl status``)."""
        return self.run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with ``psql`` (stops at the first error) and return its unaligned,
        tuples-only output."""
        done = self.run(
            "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "-d", database, "-c", sql,
        )  # fmt: skip
        return done.stdout.strip()

    def ready(self) -> bool:
        """Whether it accepts connections now (``pg_isready``)."""
        done = self.run(
            "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "5", check=False
        )
        return done.returncode == 0


def shell(line: str, env: dict[str, str], *, timeout: float = START_TIMEOUT + 30) -> str:
    """Run one documented shell ``line`` with ``bash -c`` as the postgres user, with ``env``
    added (``PGDATA``, ``PGPORT``, …) and the binaries first on ``PATH``; returns its standard
    output, raises with its output when it fails."""
    binaries = require_binaries()
    extra = {"PATH": f"{binaries}:{os.environ.get('PATH', '/usr/bin:/bin')}", **env}
    argv = _as_postgres(["env", *(f"{k}={v}" for k, v in extra.items()), "bash", "-c", line])
    # Output to a file, not a pipe: a server started by the line inherits it and keeps it open.
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(  # noqa: S603 - the documented line, run as documented
            argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False, cwd="/"
        )
        out.seek(0)
        text = out.read().decode(errors="replace")
    if done.returncode != 0:
        raise AssertionError(f"{line!r} failed ({done.returncode}):\n{text}")
    return text


def owned_dir(path: Path) -> Path:
    """Make ``path`` (mode 0700) owned by the postgres user, for its data, archive or backups."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(path, PG_USER, PG_USER)
    return path


def private_root() -> Path:
    """A new temporary directory the postgres user owns (pytest's tmp dirs are 0700 root)."""
    root = Path(tempfile.mkdtemp(prefix="trustgw-pg-"))
    root.chmod(0o700)
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER, PG_USER)
    return root


def init_cluster(binaries: Path, root: Path, name: str = "primary") -> PgCluster:
    """``initdb`` a new cluster in ``root/name`` (trust auth, UTF-8, a free port); not started."""
    cluster = PgCluster(binaries, root, root / name, free_port())
    cluster.run(
        "initdb", "-D", str(cluster.data), "-U", PG_USER, "--auth=trust",
        "-E", "UTF8", "--locale=C", "--no-sync",
    )  # fmt: skip
    return cluster


@contextlib.contextmanager
def private_cluster(name: str = "primary") -> Iterator[PgCluster]:
    """A started private cluster, stopped and deleted afterwards (skipped without binaries)."""
    binaries = require_binaries()
    root = private_root()
    cluster = init_cluster(binaries, root, name)
    try:
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            if cluster.running():
                cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
