"""nginx (Debian's) in front of several app processes, each chat kept on one process by a cookie.

Chainlit keeps a chat's session in the memory of the process that opened it: its Socket.IO
connection and its HTTP requests (an upload finds its session there) must reach that process.
Every client may come from one address (all of them do in the tests, and behind another
proxy), so the process is chosen by a cookie, not by address: nginx hashes `assistant_route`,
which it sets on a browser's first response to that request's id. When the chosen process is
down, nginx passes the request to the next one; the page's Socket.IO client reconnects there
and Chainlit resumes the chat from the shared store.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from deploy.processes import stop_process

NGINX = Path("/usr/sbin/nginx")
AFFINITY_COOKIE = "assistant_route"
# After one failed attempt, nginx leaves a process out of its rotation for this long.
FAIL_TIMEOUT_S = 10


class NginxMissing(RuntimeError):
    """Debian's nginx is not installed."""


def nginx_config(listen: int, app_ports: Sequence[int], folder: Path, logs: Path, max_upload_mb: float) -> str:
    servers = "\n".join(
        f"        server 127.0.0.1:{port} max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;" for port in app_ports
    )
    # As root the master opens the logs and ports; workers run as `nobody`.
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    return f"""# Made by deploy/proxy.py for this run; edits are overwritten.
{user}worker_processes 1;
pid {folder}/nginx.pid;
error_log {logs}/nginx-error.log warn;
events {{ worker_connections 4096; }}

http {{
    # Which app process served each request: the last field.
    log_format routed '$remote_addr [$time_local] "$request" $status $body_bytes_sent $request_time $upstream_addr';
    access_log {logs}/nginx-access.log routed;
    client_body_temp_path {folder}/client-body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    client_max_body_size {int(max_upload_mb) + 1}m;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    # A browser's process: its cookie, or a new one named after its first request.
    map $cookie_{AFFINITY_COOKIE} $route {{
        ''      $request_id;
        default $cookie_{AFFINITY_COOKIE};
    }}

    upstream assistant {{
        hash $route consistent;
{servers}
    }}

    server {{
        listen 127.0.0.1:{listen};

        location / {{
            proxy_pass http://assistant;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Answers stream (Socket.IO, server-sent events, the comparison page): pass each piece on at once.
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 1h;
            proxy_next_upstream error timeout http_502 http_503;
            add_header Set-Cookie "{AFFINITY_COOKIE}=$route; Path=/; HttpOnly; SameSite=Lax";
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(folder: Path, listen: int, app_ports: Sequence[int], logs: Path, max_upload_mb: float = 50) -> Iterator[str]:
    """Run nginx on 127.0.0.1:`listen` in front of `app_ports`; yields its URL and stops it on exit."""
    if not NGINX.exists():
        raise NginxMissing("nginx is not installed: `sudo apt-get install nginx` (make test does it).")
    folder.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    config = folder / "nginx.conf"
    config.write_text(nginx_config(listen, app_ports, folder, logs, max_upload_mb))
    command = [str(NGINX), "-p", str(folder), "-c", str(config), "-e", str(logs / "nginx-error.log")]
    subprocess.run([*command, "-t", "-q"], check=True, capture_output=True)
    with (logs / "nginx.log").open("ab") as out:
        process = subprocess.Popen(
            [*command, "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_listening(listen, process, logs / "nginx-error.log")
        yield f"http://127.0.0.1:{listen}"
    finally:
        stop_process(process, timeout_s=10)  # SIGTERM: nginx's fast shutdown


def _wait_listening(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nginx did not listen on {port} in {timeout_s} s")
