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
    users = {"admin": "admin", "bob": "bob", "vera": "vera"}  # vera is a viewer (read-only)
    stack = AirflowStack(root / "airflow", DAGS_DIR, extra_env=env, users=users, roles={"vera": "viewer"})
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


@pytest.fixture(scope="session")
def e2e_story(e2e_stack):
    """A model with a demo-like story (three versions, approvals, promotions, shadow, drift, rollback) in
    the stack's MLflow for the Models view tests, made by the operators' core calls (seconds, not minutes)."""
    import uuid

    from airflow_saga.core.mlflow_client import MlflowSettings, build_client
    from tests.support.story import seed_story

    settings = MlflowSettings(e2e_stack["mlflow"].url)
    client = build_client(settings)
    name = f"story-{uuid.uuid4().hex[:8]}"
    return {"name": name, "settings": settings, "client": client, **seed_story(settings, client, name)}
