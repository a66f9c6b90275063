"""Test-suite wiring: an isolated AIRFLOW_HOME per session and a real MLflow server per session.

Airflow reads its configuration at import time, so the environment is set here, before any test module
imports airflow.

Honest tiers: a test that asks for a server fixture (``mlflow_server`` and everything built on it, Airflow's
metadata DB for ``dag.test()``) must carry the ``integration`` or ``e2e`` marker, so ``-m "not integration
and not e2e"`` really is the fast unit tier; an unmarked one fails before any server starts. PostgreSQL
runs on every project machine and in CI: tests that need it fail when it is missing, unless a developer
sets ``SAGA_TESTS_WITHOUT_POSTGRES=1`` (then they skip, saying so).
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


#: Fixtures that start a server (directly or through the fixtures they depend on).
SERVER_FIXTURES = frozenset({"mlflow_server", "airflow_db"})
TIER_MARKERS = ("integration", "e2e")
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"


def tier_violation(item: pytest.Item) -> str | None:
    """Why ``item`` is in the wrong tier, or None: it requests a server fixture without a tier marker."""
    needs = sorted(SERVER_FIXTURES & set(getattr(item, "fixturenames", ())))
    if needs and not any(item.get_closest_marker(m) for m in TIER_MARKERS):
        return (
            f"{item.nodeid} uses server fixture(s) {needs} but is not marked integration or e2e: add "
            "`pytestmark = pytest.mark.integration` (or e2e) to its module"
        )
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    why = tier_violation(item)
    if why:
        pytest.fail(why, pytrace=False)


def postgres_admin():
    """A psycopg2 connection to the shared PostgreSQL's ``postgres`` database (autocommit).

    Fails the test when PostgreSQL is not reachable, because it always runs on the project's machines and
    in CI; ``SAGA_TESTS_WITHOUT_POSTGRES=1`` turns that into a skip for a laptop without it.
    """
    import psycopg2

    try:
        conn = psycopg2.connect(f"{POSTGRES_URL}/postgres", connect_timeout=10)
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc})"
        if os.environ.get("SAGA_TESTS_WITHOUT_POSTGRES") == "1":
            pytest.skip(f"{message}; SAGA_TESTS_WITHOUT_POSTGRES=1")
        pytest.fail(f"{message}; start it, or set SAGA_TESTS_WITHOUT_POSTGRES=1 to skip on a laptop")
    conn.autocommit = True
    return conn


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
