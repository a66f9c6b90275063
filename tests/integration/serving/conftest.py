"""A real gateway process (``python -m airflow_saga.cli serve``, real uvicorn) against the session MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO
from tests.support.procs import free_port, stop, wait_http


class GatewayProc:
    def __init__(self, root: Path, model: str, tracking_uri: str, *args: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.root / "gateway.log"
        self.cmd = [
            sys.executable,
            "-m",
            "airflow_saga.cli",
            "serve",
            model,
            "--tracking-uri",
            tracking_uri,
            "--port",
            str(self.port),
            "--log-level",
            "info",
            *args,
        ]
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}  # added to the environment (e.g. AWS settings for S3 capture)

    def start(self, timeout: float = 120) -> GatewayProc:
        env = dict(os.environ)
        env.pop("SAGA_SERVE_TOKEN", None)
        env.update(self.env)
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        wait_http(f"{self.url}/ping", timeout, self.proc, self.log)
        return self

    def stop(self) -> int | None:
        if self.proc is not None:
            stop(self.proc, timeout=60)
            return self.proc.returncode
        return None

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", timeout=10).json()


@pytest.fixture
def gateway_factory(tmp_path, mlflow_server):
    started: list[GatewayProc] = []

    def make(model: str, *args: str) -> GatewayProc:
        g = GatewayProc(tmp_path / f"gw{len(started)}", model, mlflow_server.url, *args)
        started.append(g)
        return g.start()

    yield make
    for g in started:
        g.stop()
