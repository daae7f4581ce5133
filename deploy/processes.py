"""Small process helpers shared by the deploy modules (and the tests): free ports, stopping."""

from __future__ import annotations

import signal
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 20) -> None:
    """Send `sig` (if still running) and wait; killed if it has not exited within `timeout_s`."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
