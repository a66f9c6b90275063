"""Test-suite wiring: an isolated AIRFLOW_HOME per session and a real MLflow server per session.

Airflow reads its configuration at import time, so the environment is set here, before any test module
imports airflow.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAGS_DIR = REPO / "dags"

_home = Path(tempfile.mkdtemp(prefix="saga-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_home)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS_DIR)
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home / 'airflow.db'}"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# Tests never fall back to a developer's own server.
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real MLflow tracking + registry server (SQLite, proxied artifacts) for the whole session."""
    from tests.support.procs import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_settings(mlflow_server):
    from airflow_saga.core.mlflow_client import MlflowSettings

    return MlflowSettings(tracking_uri=mlflow_server.url)


@pytest.fixture(scope="session")
def mlflow_client(mlflow_settings):
    from airflow_saga.core.mlflow_client import build_client

    return build_client(mlflow_settings)


@pytest.fixture
def model_name(request: pytest.FixtureRequest) -> str:
    """A registered-model name unique to the test, so tests never share registry state."""
    import re
    import uuid

    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:6]}"
