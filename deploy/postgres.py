"""A PostgreSQL server of its own in a folder, for trying the team set-up (`make team`) and for the tests.

Debian's PostgreSQL binaries (package `postgresql`), run directly: `initdb` makes the cluster,
`postgres` serves it on 127.0.0.1 and a socket in the same folder. PostgreSQL refuses to run
as root, so as root the folder is given to the unprivileged user `nobody` and the server runs
as that user. A production store is a PostgreSQL server of its own (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.processes import stop_process

UNPRIVILEGED = "nobody"
SUPERUSER = "assistant"


class PostgresMissing(RuntimeError):
    """Debian's PostgreSQL server is not installed."""


def server_binaries() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian keeps one per major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[4]))
    if not found:
        raise PostgresMissing("PostgreSQL is not installed: `sudo apt-get install postgresql` (make test does it).")
    return Path(found[-1]).parent


@dataclass(frozen=True)
class LocalPostgres:
    folder: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        _run([str(server_binaries() / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name])
        return self.url(name)

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one SQL statement with psql; returns what it printed (unaligned, tuples only)."""
        psql = shutil.which("psql") or str(server_binaries() / "psql")
        command = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-At", "-c"]
        return _run([*command, statement]).stdout


@contextlib.contextmanager
def local_postgres(folder: Path, port: int, log: Path | None = None) -> Iterator[LocalPostgres]:
    """Initialise (once) and run a PostgreSQL cluster in `folder` on 127.0.0.1:`port`; stops it on exit."""
    binaries = server_binaries()
    as_user = _unprivileged_prefix(folder)
    data = folder / "data"
    if not (data / "PG_VERSION").exists():
        _run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER, "-A", "trust", "--no-sync"])
    log = log or folder / "postgres.log"
    with log.open("ab") as out:
        if as_user:
            with contextlib.suppress(LookupError):
                shutil.chown(log, UNPRIVILEGED)
        command = [
            *as_user,
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(folder),  # its socket: not /var/run/postgresql, which may not exist or be writable
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off" if os.environ.get("CI") else "fsync=on",
            "-c",
            "max_connections=200",
        ]
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        server = LocalPostgres(folder, port)
        try:
            _wait_ready(binaries, port, process, log)
            yield server
        finally:
            stop_process(process)  # SIGTERM: PostgreSQL's smart shutdown


def _unprivileged_prefix(folder: Path) -> list[str]:
    """As root: run as `nobody`, who must own the folder (and reach it: its parents must be searchable)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return []
    shutil.chown(folder, UNPRIVILEGED)
    folder.chmod(0o700)
    return ["runuser", "-u", UNPRIVILEGED, "--"]


def _wait_ready(binaries: Path, port: int, process: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        ready = subprocess.run(
            [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER],
            capture_output=True,
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"PostgreSQL did not accept connections in {timeout_s} s:\n{log.read_text()[-2000:]}")


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done
