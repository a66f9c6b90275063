"""Approval through Airflow's human-in-the-loop step, driven over REST on the running embedded stack, then
promotion, rollback through the shipped saga_rollback DAG, rejection, and lineage of what was recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_saga.core import tags as T
from airflow_saga.core.mlflow_client import MlflowSettings, build_client
from airflow_saga.devstack.api import AirflowApi

pytestmark = pytest.mark.e2e

DAG = "saga_training_pipeline"
SAGA = str(Path(sys.executable).parent / "saga")


def _approve_run(api: AirflowApi, bob: AirflowApi, run_id: str, option: str, comment: str) -> dict:
    api.wait_task_state(DAG, run_id, "approve_in_airflow", {"awaiting_input"}, timeout=600)
    pending = api.pending_hitl(DAG, run_id)
    assert pending and pending[0]["task_instance"]["task_id"] == "approve_in_airflow"
    assert "Approve" in pending[0]["options"]
    time.sleep(3)  # Airflow 3.3.2 can fail a HITL task answered within ~1 s of parking (see notes)
    bob.respond_hitl(DAG, run_id, "approve_in_airflow", option, {"comment": comment})
    return api.wait_run(DAG, run_id, timeout=600)


def _saga(*args: str, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "SAGA_USER": "pytest"}
    return subprocess.run([SAGA, *args], capture_output=True, text=True, env=env, timeout=300, check=False)


def test_hitl_approval_promotion_rollback_and_rejection(e2e_stack):
    api: AirflowApi = e2e_stack["api"]
    bob = AirflowApi(e2e_stack["airflow"].url, "bob", "bob")
    url = e2e_stack["mlflow"].url
    client = build_client(MlflowSettings(url))
    name = "e2e-governed-model"
    api.wait_for_dag(DAG)
    api.unpause(DAG)

    # 1. approve in Airflow: the first approved version becomes champion
    r1 = api.trigger(DAG, {"model_name": name})
    run = _approve_run(api, bob, r1, "Approve", "metrics look right")
    assert run["state"] == "success", api.task_instances(DAG, r1)
    mv1 = client.get_model_version(name, "1")
    assert mv1.tags[T.APPROVAL_STATUS] == T.APPROVED
    assert mv1.tags[T.APPROVAL_BY] == "bob" and mv1.tags[T.APPROVAL_VIA] == "airflow"
    assert mv1.tags[T.APPROVAL_COMMENT].startswith("metrics look right")
    assert client.get_registered_model(name).aliases == {T.CHAMPION: "1"}
    links = api.links(DAG, r1, "register")
    assert any(v and f"/models/{name}/versions/1" in v for v in links.values()), links
    # the MLflow entry in Airflow's navigation bar points at this stack's MLflow
    plugins = api._req("GET", "/plugins")["plugins"]
    saga = next(p for p in plugins if p["name"] == "saga")
    assert any(v["name"] == "MLflow" and v["href"] == url for v in saga["external_views"]), saga

    # 2. a second approved version becomes challenger; promoting it by CLI records the previous champion
    r2 = api.trigger(DAG, {"model_name": name})
    assert _approve_run(api, bob, r2, "Approve", "ok")["state"] == "success"
    assert client.get_registered_model(name).aliases == {T.CHAMPION: "1", T.CHALLENGER: "2"}
    res = _saga("promote", name, "2", "--alias", "champion", "--reason", "shadow test won", url=url)
    assert res.returncode == 0, res.stderr
    assert client.get_registered_model(name).aliases.get(T.CHAMPION) == "2"

    # 3. one-click rollback: the shipped DAG, triggered over REST with params
    api.wait_for_dag("saga_rollback")
    api.unpause("saga_rollback")
    rb = api.trigger("saga_rollback", {"model_name": name, "reason": "p99 regression in prod"})
    assert api.wait_run("saga_rollback", rb, timeout=600)["state"] == "success"
    assert client.get_registered_model(name).aliases.get(T.CHAMPION) == "1"
    assert client.get_model_version(name, "2").tags[T.ROLLED_BACK_REASON].startswith("p99 regression in prod")

    # 4. a rejection ends the run failed with the reason and marks the version Rejected
    r3 = api.trigger(DAG, {"model_name": name})
    run3 = _approve_run(api, bob, r3, "Reject", "training data was stale")
    assert run3["state"] == "failed"
    mv3 = client.get_model_version(name, "3")
    assert mv3.tags[T.APPROVAL_STATUS] == T.REJECTED and mv3.tags[T.APPROVAL_BY] == "bob"
    aliases = client.get_registered_model(name).aliases
    assert aliases.get(T.CHAMPION) == "1" and aliases.get(T.CHALLENGER) != "3"

    # 5. the history and lineage tell the whole story, as recorded
    hist = json.loads(_saga("history", name, "--json", url=url).stdout)["history"]
    assert [(h["action"], h["alias"], h["from"], h["to"]) for h in hist][:2] == [
        ("promote", "champion", None, "1"),
        ("promote", "challenger", None, "2"),
    ]
    assert any(h["action"] == "rollback" and h["from"] == "2" and h["to"] == "1" for h in hist)
    out = _saga("lineage", name, "@champion", "--json", url=url)
    assert out.returncode == 0, out.stderr
    lineage = json.loads(out.stdout)
    text = json.dumps(lineage)
    assert mv1.tags[T.DATASET_DIGEST] in text and r1 in text and mv1.run_id in text
    human = _saga("lineage", name, "1", url=url).stdout
    assert "bob" in human and mv1.tags[T.DATASET_DIGEST] in human
