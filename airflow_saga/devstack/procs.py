"""Process helpers: free loopback ports, readiness polling, and group-wide shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path | None, n: int = 4000) -> str:
    """The end of a log, credentials redacted (it goes into exception messages)."""
    if path is None or not path.exists():
        return ""
    return _redact(path.read_text(errors="replace")[-n:])


def wait_http(
    url: str,
    timeout: float,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    ok: tuple[int, ...] = (),
) -> None:
    import requests

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(_redact(f"process for {url} exited with {proc.returncode}:\n{tail(log)}"))
        try:
            r = requests.get(url, timeout=3)
            if (r.status_code in ok) if ok else r.status_code < 500:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(_redact(f"{url} not ready after {timeout}s ({last}):\n{tail(log)}"))


def _redact(text: str) -> str:
    from airflow_saga.core.redaction import redact

    return redact(text)


def spawn(cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so ``stop`` can signal its whole group), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        cmd,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM the process group, then SIGKILL what is left."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    # children that outlived the leader (e.g. gunicorn/uvicorn workers) share the group id
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def bytecode_env() -> dict[str, str]:
    """Cache bytecode outside the venv: with PYTHONDONTWRITEBYTECODE every start is ~2.5x slower."""
    cache = Path(os.environ.get("SAGA_PYCACHE", Path.home() / ".cache" / "airflow-saga" / "pycache"))
    env = {"PYTHONPYCACHEPREFIX": str(cache)}
    return env
