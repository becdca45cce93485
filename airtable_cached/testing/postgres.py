"""A real PostgreSQL server for the tests and benchmarks, started on loopback in a temporary folder.

The server binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/<n>/bin``;
``.ci/run`` installs it when missing). ``initdb`` refuses to run as root, so under root the server
runs as the ``postgres`` system user the package creates. The server is throw-away: ``fsync`` is
off, authentication is ``trust`` on 127.0.0.1 only, and the folder is removed at the end.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

SUPERUSER = "postgres"
_databases = itertools.count(1)


def find_bin_dir() -> Path | None:
    """The newest PostgreSQL's binaries folder, or None where no server is installed."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "pg_ctl").exists()]
    if not found:
        on_path = shutil.which("pg_ctl")
        return Path(on_path).parent if on_path else None
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> tuple[list[str], int | None, int | None]:
    """The command prefix (and uid/gid) to run the server's programs with: unprivileged under root."""
    if os.geteuid() != 0:
        return [], None, None
    user = pwd.getpwnam(SUPERUSER)
    return ["runuser", "-u", SUPERUSER, "--"], user.pw_uid, user.pw_gid


class PgServer:
    """One running server; :meth:`create_database` hands out fresh, empty databases."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.prefix, uid, gid = _run_as()
        self.folder = Path(tempfile.mkdtemp(prefix="airtable-cached-pg-"))
        if uid is not None:
            os.chown(self.folder, uid, gid if gid is not None else -1)
        self.data = self.folder / "data"
        self.port = _free_port()

    def _run(self, program: str, *args: str) -> None:
        command = [*self.prefix, str(self.bin_dir / program), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
                   " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w",
                  "-t", "60", "start")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


@contextlib.contextmanager
def running_server() -> Iterator[PgServer | None]:
    """A started server for the session, or None where no PostgreSQL is installed."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        yield None
        return
    server = PgServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
