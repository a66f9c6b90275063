"""The inference gateway as a process (``saga serve``), as the compose file's ``saga-gateway`` runs it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow_saga.devstack.procs import VENV_BIN, bytecode_env, free_port, spawn, stop, wait_http


class GatewayProcess:
    def __init__(
        self,
        root: Path,
        model: str,
        tracking_uri: str,
        *,
        port: int | None = None,
        shadow: str | None = "challenger",
        poll_interval: float = 2.0,
        log_level: str = "warning",
    ) -> None:
        self.root = Path(root)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.capture_dir = self.root / "capture"
        self.log = self.root / "gateway.log"
        self.cmd = [
            str(VENV_BIN / "saga"), "serve", model, "--host", "127.0.0.1", "--port", str(self.port),
            "--tracking-uri", tracking_uri, "--capture-dir", str(self.capture_dir),
            "--poll-interval", str(poll_interval), "--flush-interval", "1", "--log-level", log_level,
        ]  # fmt: skip
        if shadow:
            self.cmd += ["--shadow", shadow, "--shadow-sample", "100"]
        self.proc: Any = None

    def start(self, timeout: float = 180) -> GatewayProcess:
        env = {**os.environ, **bytecode_env()}
        env.pop("SAGA_SERVE_TOKEN", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = spawn(self.cmd, self.log, env)
        wait_http(f"{self.url}/ping", timeout, self.proc, self.log, ok=(200,))
        return self

    def health(self) -> dict:
        import requests

        return requests.get(f"{self.url}/health", timeout=10).json()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=60)
            self.proc = None
