"""A whole team's assistant on one machine: PostgreSQL, N app processes and nginx in front.

    make team                                   # 2 app processes on http://127.0.0.1:8000
    .venv/bin/python -m deploy.team --processes 3 --port 8080

Every process shares the chat store (PostgreSQL: `DATABASE_URL`, or a cluster of its own
under `DATA_DIR/team/postgres`), the saved elements and the knowledge-base index (`DATA_DIR`),
and the login secret (kept in the store). Each has its own Chainlit app root: Chainlit
deletes `<app root>/.files` when a process stops, which holds the uploads of every chat that
process serves. Logs go to `DATA_DIR/team/logs/`; Ctrl-C stops everything. A process that
dies is reported and the others go on: its chats reconnect to them.

docs/operations.md explains how the same pieces spread over several machines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from deploy.postgres import PostgresMissing, local_postgres
from deploy.processes import free_port, stop_process
from deploy.proxy import NginxMissing, nginx

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHAINLIT = Path(sys.executable).with_name("chainlit")


def make_app_root(app_root: Path) -> Path:
    """A Chainlit app root of its own at `app_root`: a copy of the project's Chainlit config and
    welcome pages (chainlit.md and its translations, chainlit_<language>.md). Chainlit keeps
    uploads under `<app root>/.files` and deletes that whole folder when a server stops, so no
    two servers, and no test process, may share one."""
    (app_root / ".chainlit").mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / ".chainlit" / "config.toml", app_root / ".chainlit" / "config.toml")
    for page in [PROJECT_ROOT / "chainlit.md", *PROJECT_ROOT.glob("chainlit_*.md")]:
        shutil.copy(page, app_root / page.name)
    return app_root


def app_command(port: int, host: str = "127.0.0.1", watch: bool = False) -> list[str]:
    return [
        str(CHAINLIT),
        "run",
        "app.py",
        "--headless",
        "--host",
        host,
        "--port",
        str(port),
        *(["-w"] if watch else []),
    ]


@dataclass
class AppProcess:
    name: str
    port: int
    log: Path
    process: subprocess.Popen
    command: Callable[[int], list[str]] = app_command

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        stop_process(self.process, sig, timeout_s)


@dataclass
class Team:
    url: str
    processes: list[AppProcess]
    folder: Path
    env: Mapping[str, str]

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    def restart(self, app: AppProcess) -> AppProcess:
        """Start a stopped process again on its port, as a supervisor would; waits until it serves."""
        app.stop()
        again = start_app(app.name, self.folder / "app-roots", self.env, self.logs, app.port, app.command)
        self.processes[self.processes.index(app)] = again
        wait_until_serving(again)
        return again


def start_app(
    name: str,
    folder: Path,
    env: Mapping[str, str],
    logs: Path,
    port: int | None = None,
    command: Callable[[int], list[str]] = app_command,
) -> AppProcess:
    """One app process on `port` (a free one if None), started by `command(port)`, with its own app
    root under `folder`; not waited for."""
    port = port or free_port()
    app_root = make_app_root(folder / name)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command(port),
            cwd=PROJECT_ROOT,
            env={**env, "CHAINLIT_APP_ROOT": str(app_root)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops everything in order
        )
    return AppProcess(name, port, log, process, command)


def wait_until_serving(app: AppProcess, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise RuntimeError(f"{app.name} exited with {app.process.returncode}:\n{app.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(app.url, timeout=2).status_code < 500:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{app.name} did not come up in {timeout_s} s:\n{app.log.read_text()[-3000:]}")


@contextlib.contextmanager
def team(
    folder: Path,
    processes: int,
    env: Mapping[str, str],
    port: int | None = None,
    command: Callable[[int], list[str]] = app_command,
) -> Iterator[Team]:
    """`processes` app processes with `env` (which must name a shared DATABASE_URL) behind nginx on
    127.0.0.1:`port`; everything is stopped on exit. `command(port)` starts one (bench/ runs an
    instrumented app)."""
    logs = folder / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[AppProcess] = []
    running: Team | None = None
    try:
        # Started together, as a supervisor would: the index is built once (its file lock) for all.
        roots = folder / "app-roots"
        started = [start_app(f"app-{index}", roots, env, logs, command=command) for index in range(1, processes + 1)]
        for app in started:
            wait_until_serving(app)
        max_upload_mb = float(env.get("UPLOAD_MAX_MB", 50))
        with nginx(folder / "nginx", port or free_port(), [app.port for app in started], logs, max_upload_mb) as url:
            running = Team(url, started, folder, env)
            yield running
    finally:
        for app in running.processes if running else started:
            app.stop()


@contextlib.contextmanager
def team_store(folder: Path, env: Mapping[str, str]) -> Iterator[str]:
    """The team's PostgreSQL URL: DATABASE_URL if set, else a cluster of its own under `folder`."""
    if env.get("DATABASE_URL"):
        yield env["DATABASE_URL"]
        return
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        folder.chmod(0o755)  # the server runs as `nobody`, who must reach its cluster
    with local_postgres(folder / "postgres", free_port(), folder / "logs" / "postgres.log") as server:
        if "assistant" not in server.sql("SELECT datname FROM pg_database").split():
            server.create_database("assistant")
        yield server.url("assistant")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.team", description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="app processes behind the proxy (default 2)")
    parser.add_argument("--port", type=int, default=8000, help="the proxy's port on 127.0.0.1 (default 8000)")
    args = parser.parse_args(argv)

    from models.settings import Settings  # the app's own settings: DATA_DIR, UPLOAD_MAX_MB, …

    settings = Settings()
    folder = settings.data_dir / "team"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    stop = _stop_on_signals()
    try:
        with team_store(folder, os.environ) as database_url:
            env = {**os.environ, "DATABASE_URL": database_url, "DATA_DIR": str(settings.data_dir)}
            env.setdefault("UPLOAD_MAX_MB", str(settings.upload_max_mb))
            print(f"Starting {args.processes} app processes; logs in {folder / 'logs'}", flush=True)
            with team(folder, args.processes, env, args.port) as running:
                print(f"The assistant is at {running.url} (Ctrl-C stops it)", flush=True)
                _watch(running, stop)
    except (PostgresMissing, NginxMissing) as missing:
        print(f"❌ {missing}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    print("Stopped.", flush=True)
    return 0


def _stop_on_signals() -> list[bool]:
    stop = [False]

    def request_stop(signum: int, frame: object) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop


def _watch(running: Team, stop: list[bool]) -> None:
    reported: set[str] = set()
    while not stop[0]:
        for app in running.processes:
            if app.process.poll() is not None and app.name not in reported:
                reported.add(app.name)
                print(f"⚠️ {app.name} exited ({app.process.returncode}); see {app.log}", flush=True)
        time.sleep(0.5)


if __name__ == "__main__":
    raise SystemExit(main())
