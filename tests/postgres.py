"""A private PostgreSQL cluster for the test session, on a free port.

Like the broker, the database is started by the tests themselves: `initdb`
into a temporary directory and `pg_ctl start` listening on 127.0.0.1 only, so
the suite never touches a machine's shared server. PostgreSQL refuses to run
as root, so when the tests run as root the cluster runs as the `postgres`
user that Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from cli.brokers.mosquitto import free_port


def _bindir() -> Path:
    # Debian keeps the server tools out of PATH, one directory per major version.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates and shutil.which("pg_ctl"):
        candidates = [str(shutil.which("pg_ctl"))]
    if not candidates:
        raise RuntimeError(
            "PostgreSQL is not installed: `./xaso test` installs it (apt package postgresql)"
        )
    return Path(candidates[-1]).parent


class PostgresCluster:
    """initdb + pg_ctl in a temp dir; `create_database()` hands out fresh URLs."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="xaso-pg-"))
        self.as_root = os.geteuid() == 0

    def _run(self, *argv: str) -> None:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> PostgresCluster:
        data = self.dir / "data"
        if self.as_root:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database and its URL, so that each test starts clean."""
        name = "t_" + uuid.uuid4().hex[:12]
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
