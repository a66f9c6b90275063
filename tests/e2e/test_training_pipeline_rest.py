"""Trigger the shipped training DAG through Airflow's REST API on a running embedded stack and check the
registered version through MLflow's REST API: exactly what the README's first command does."""

from __future__ import annotations

import pytest
import requests

from airflow_saga.core import tags as T

pytestmark = pytest.mark.e2e

DAG = "saga_training_pipeline"


def _mv(mlflow_url: str, name: str, version: str) -> dict:
    r = requests.get(
        f"{mlflow_url}/api/2.0/mlflow/model-versions/get",
        params={"name": name, "version": version},
        timeout=30,
    )
    r.raise_for_status()
    mv = r.json()["model_version"]
    mv["tags"] = {t["key"]: t["value"] for t in mv.get("tags", [])}
    return mv


def _versions(mlflow_url: str, name: str) -> list[dict]:
    r = requests.get(
        f"{mlflow_url}/api/2.0/mlflow/model-versions/search", params={"filter": f"name='{name}'"}, timeout=30
    )
    r.raise_for_status()
    return r.json().get("model_versions", [])


def test_rest_trigger_registers_pending_version_then_impossible_gate_fails(e2e_stack):
    api, mlflow_url = e2e_stack["api"], e2e_stack["mlflow"].url
    api.wait_for_dag(DAG)
    api.unpause(DAG)
    name = "e2e-rest-model"

    run_id = api.trigger(DAG, {"model_name": name})
    # The run registers the version, then parks in the human-in-the-loop approval step.
    api.wait_task_state(DAG, run_id, "approve_in_airflow", {"awaiting_input"}, timeout=600)
    run = api.dag_run(DAG, run_id)
    assert run["logical_date"] is None  # triggered like the UI does: no {{ ds }} available

    reg = api.xcom(DAG, run_id, "register")
    mv = _mv(mlflow_url, name, reg["version"])
    tags = mv["tags"]
    assert tags[T.APPROVAL_STATUS] == T.PENDING
    assert tags[T.AIRFLOW_RUN_ID] == run_id and tags[T.AIRFLOW_DAG_ID] == DAG
    assert tags[T.AIRFLOW_RUN_URL].startswith(e2e_stack["airflow"].url)
    assert tags[T.DATASET_DIGEST] and tags[T.DATASET_SOURCE] == "sklearn:breast_cancer"
    assert mv["run_link"] == tags[T.AIRFLOW_RUN_URL]
    # Not approving it leaves it pending; answer so the run ends (approval itself is tested elsewhere).
    import time

    time.sleep(3)
    api.respond_hitl(DAG, run_id, "approve_in_airflow", "Approve", {"comment": "e2e"})
    assert api.wait_run(DAG, run_id, timeout=600)["state"] == "success"

    run2 = api.trigger(DAG, {"model_name": name, "conditions": "accuracy >= 1.01"})
    final = api.wait_run(DAG, run2, timeout=600)
    assert final["state"] == "failed"
    tis = api.task_instances(DAG, run2)
    assert tis["quality_gate"]["state"] == "failed"
    log = api.task_log(DAG, run2, "quality_gate", tis["quality_gate"]["try_number"])
    assert "Quality gate blocked" in log and "1.01" in log
    assert len(_versions(mlflow_url, name)) == 1
