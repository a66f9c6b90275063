"""End-to-end fixtures: a real MLflow server and Airflow's embedded topology as processes.

One stack serves the whole session (starting it costs ~30-60 s on 2 cores); tests stay independent by using
their own model names.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import DAGS_DIR


@pytest.fixture(scope="session")
def e2e_stack(tmp_path_factory):
    from airflow_saga.devstack.airflow import AirflowStack
    from airflow_saga.devstack.api import AirflowApi
    from airflow_saga.devstack.mlflow_server import MlflowServer

    root = tmp_path_factory.mktemp("e2e")
    mlflow = MlflowServer(root / "mlflow").start()
    conn = json.dumps({"conn_type": "mlflow", "host": mlflow.url})
    env = {"AIRFLOW_CONN_MLFLOW_DEFAULT": conn, "SAGA_MLFLOW_UI_URL": mlflow.url}
    env.pop("MLFLOW_TRACKING_URI", None)
    stack = AirflowStack(root / "airflow", DAGS_DIR, extra_env=env, users={"admin": "admin", "bob": "bob"})
    # The test process itself imports airflow with the session's AIRFLOW_HOME; the stack gets its own.
    stack.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    try:
        stack.start()
    except BaseException:
        print(stack.logs())
        stack.stop()
        mlflow.stop()
        raise
    api = AirflowApi(stack.url, "admin", "admin")
    yield {"mlflow": mlflow, "airflow": stack, "api": api, "root": root}
    stack.stop()
    mlflow.stop()
