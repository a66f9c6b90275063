"""The package is a real Airflow provider: discovery, connection type, and parse-time lightness."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import DAGS_DIR, REPO

pytestmark = pytest.mark.integration

HEAVY = ("mlflow", "sklearn", "pandas", "evidently")
WIRING_DAG = REPO / "tests" / "integration" / "dags" / "saga_test_wiring.py"


def test_importing_dags_and_operators_loads_no_ml_library():
    code = f"""
import sys, json, runpy, glob
import airflow_saga.operators as ops
for name in ops.__all__:
    getattr(ops, name)  # every exported operator imports (a broken one fails this test, never skips)
import airflow_saga.hooks.mlflow, airflow_saga.operators.base, airflow_saga.core.runs
# issue 9: the training-function decorator and the modules behind it (a DAG with @task.saga_train too)
import airflow_saga.decorators, airflow_saga.hooks.sql, airflow_saga.core.sources
import airflow_saga.core.training, airflow_saga.core.registration, airflow_saga.operators._util
for path in sorted(glob.glob({str(DAGS_DIR)!r} + "/*.py")) + [{str(WIRING_DAG)!r}]:
    runpy.run_path(path)
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))
"""
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"heavy modules imported at parse time: {loaded}"


def test_airflow_providers_list_shows_the_package():
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "airflow"), "providers", "list"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "airflow-saga" in out.stdout


def test_provider_info_declares_mlflow_connection_type():
    from airflow_saga.get_provider_info import get_provider_info

    info = get_provider_info()
    assert info["package-name"] == "airflow-saga"
    assert {
        "connection-type": "mlflow",
        "hook-class-name": "airflow_saga.hooks.mlflow.MlflowHook",
        "hook-name": "MLflow",
    } in info["connection-types"]


def test_dagbag_has_no_import_errors(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    assert not bag.import_errors, bag.import_errors
    assert "saga_training_pipeline" in bag.dag_ids


def test_hook_reads_connection_without_touching_environment(monkeypatch):
    from airflow_saga.hooks.mlflow import MlflowHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_MY_MLFLOW",
        json.dumps(
            {
                "conn_type": "mlflow",
                "host": "mlflow.internal",
                "port": 5000,
                "login": "u",
                "password": "p",
                "extra": {"registry_uri": "http://reg:5001", "max_retries": 1},
            }
        ),
    )
    before = dict(os.environ)
    settings = MlflowHook("my_mlflow").settings
    assert settings.tracking_uri == "http://mlflow.internal:5000"
    assert settings.registry_uri == "http://reg:5001" and settings.max_retries == 1
    assert (settings.username, settings.password) == ("u", "p")
    assert dict(os.environ) == before
