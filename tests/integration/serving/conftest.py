"""A real gateway process (``python -m airflow_saga.cli serve``, real uvicorn) against the session MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from airflow_saga.core import tags
from tests.conftest import REPO
from tests.support import models
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

    def make(model: str, *args: str, timeout: float = 120) -> GatewayProc:
        g = GatewayProc(tmp_path / f"gw{len(started)}", model, mlflow_server.url, *args)
        started.append(g)
        return g.start(timeout)

    yield make
    for g in started:
        g.stop()


# --- one gateway with a shadow, capture, auth, a size limit and webhooks, shared by the serving tests ---
TOKEN = "t0ken-for-tests"
SECRET = "webhook-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHADOW_VALUE = 7  # the challenger answers 7 for everything; a served 7 would be a leaked shadow answer


@pytest.fixture(scope="package")
def gw(tmp_path_factory, mlflow_server, mlflow_client):
    name = f"serving-{uuid.uuid4().hex[:6]}"
    models.register_sklearn(mlflow_client, name, aliases=(tags.CHAMPION,))
    models.register_pyfunc(
        mlflow_client, name, models.SlowOrFailingModel(value=SHADOW_VALUE), aliases=(tags.CHALLENGER,)
    )
    root = tmp_path_factory.mktemp("gw-serving")
    g = GatewayProc(
        root,
        name,
        mlflow_server.url,
        "--shadow",
        "challenger",
        "--capture-dir",
        str(root / "capture"),
        "--flush-interval",
        "0.2",
        "--auth-token",
        TOKEN,
        "--max-body-bytes",
        "200000",
        "--webhook-secret",
        SECRET,
    )
    g.capture = root / "capture"  # type: ignore[attr-defined]
    g.start()
    yield g
    g.stop()
