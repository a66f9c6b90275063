"""Lineage queries and the governance CLI against a real MLflow server, checked against what was recorded."""

from __future__ import annotations

import json

import pytest

from airflow_saga.cli import main
from airflow_saga.core import approval, lineage_query, promotion
from airflow_saga.core import tags as T
from airflow_saga.core.errors import RegistryError
from airflow_saga.core.lineage import lineage_tags
from airflow_saga.core.registry import register_version

pytestmark = pytest.mark.integration


def _pipeline_like_version(client, name, digest, dag_run_id):
    """Record a version the way the training pipeline does: run + dataset input + lineage tags."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    run = client.create_run("0", tags={T.RUN_KIND: "train"})
    rid = run.info.run_id
    client.log_param(rid, "n_estimators", "50")
    client.log_metric(rid, "accuracy", 0.91)
    ds = Dataset(
        name="train", digest=digest, source_type="local", source=json.dumps({"uri": "/data/iris.csv"})
    )
    client.log_inputs(rid, datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", "training")])])
    client.set_terminated(rid)
    tags = lineage_tags(
        run_id=rid,
        model_uri=f"runs:/{rid}/model",
        dataset={"digest": digest, "source": "/data/iris.csv", "rows": 150},
        airflow={
            "dag_id": "saga_training_pipeline",
            "run_id": dag_run_id,
            "task_id": "register",
            "try_number": "1",
            "run_url": f"http://af/dags/saga_training_pipeline/runs/{dag_run_id}",
            "dag_file_hash": "abc123",
        },
        estimator="sklearn.ensemble.RandomForestClassifier",
        metrics={"accuracy": 0.91},
        gate={"passed": True, "report_uri": "mlflow-artifacts:/0/gate.json", "expression": "accuracy >= 0.8"},
        eval_report_uri="mlflow-artifacts:/0/eval.json",
    )
    mv, _ = register_version(client, name, model_uri=f"runs:/{rid}/model", run_id=rid, tags=tags)
    return str(mv.version), rid


def test_lineage_forward_and_reverse(mlflow_client, model_name):
    # DAG run ids unique to this test: versions_by_dag_run searches every model on the session's server,
    # where other tests (tests/support/story.py) register versions from manual__1, manual__2 ...
    run1, run2 = f"manual__1_{model_name[-6:]}", f"manual__2_{model_name[-6:]}"
    v1, rid1 = _pipeline_like_version(mlflow_client, model_name, "d1gest01", run1)
    v2, _ = _pipeline_like_version(mlflow_client, model_name, "d1gest02", run2)
    approval.set_status(mlflow_client, model_name, v1, T.APPROVED, by="alice", comment="ok", via="airflow")
    promotion.promote(mlflow_client, model_name, v1, "auto", by="alice", reason="first")

    story = lineage_query.lineage(mlflow_client, model_name, "@champion")
    assert story["version"]["version"] == v1 and story["version"]["aliases"] == [T.CHAMPION]
    assert story["version"]["status"] == T.APPROVED
    assert story["run"]["id"] == rid1 and story["run"]["params"] == {"n_estimators": "50"}
    assert story["run"]["metrics"] == {"accuracy": 0.91}
    assert story["run"]["datasets"][0]["digest"] == "d1gest01"
    assert story["dataset"] == {"digest": "d1gest01", "source": "/data/iris.csv", "rows": "150"}
    assert story["code"]["dag_file_hash"] == "abc123" and story["code"]["package_version"]
    assert story["airflow"]["run_id"] == run1 and story["airflow"]["url"].endswith(f"/runs/{run1}")
    assert story["evaluation"] == {
        "report_uri": "mlflow-artifacts:/0/eval.json",
        "metrics": {"accuracy": 0.91},
    }
    assert story["gate"]["decision"] == "passed" and story["gate"]["summary"] == "accuracy >= 0.8"
    assert [(a["status"], a["by"], a["via"]) for a in story["approvals"]] == [
        (T.PENDING, "airflow-saga", "api"),
        (T.APPROVED, "alice", "airflow"),
    ]
    assert [(p["action"], p["to"]) for p in story["promotions"]] == [("promote", v1)]
    assert lineage_query.lineage(mlflow_client, model_name, v1) == {**story, "requested": v1}
    assert lineage_query.lineage(mlflow_client, model_name)["version"]["version"] == v1  # default: champion

    text = lineage_query.format_lineage(story)
    for needle in (
        f"version {v1}",
        "@champion",
        rid1,
        "d1gest01",
        "manual__1",
        "eval.json",
        "gate: passed",
        "Approved",
        "by alice via airflow",
        f"promote champion: None -> {v1}",
    ):
        assert needle in text, needle

    assert [r["version"] for r in lineage_query.versions_by_dataset(mlflow_client, "d1gest02")] == [v2]
    assert lineage_query.versions_by_dataset(mlflow_client, "d1gest02", name="other-model") == []
    hits = lineage_query.versions_by_dag_run(mlflow_client, "saga_training_pipeline", run1)
    assert [(h["model"], h["version"]) for h in hits] == [(model_name, v1)]

    with pytest.raises(RegistryError, match="no alias 'challenger'"):
        lineage_query.lineage(mlflow_client, model_name, "@challenger")
    with pytest.raises(RegistryError, match="has no version '9'"):
        lineage_query.lineage(mlflow_client, model_name, "9")


def test_cli_governance_round_trip(mlflow_client, mlflow_server, model_name, capsys):
    v1, _ = _pipeline_like_version(mlflow_client, model_name, "c11d1g01", "scheduled__x")
    v2, _ = _pipeline_like_version(mlflow_client, model_name, "c11d1g02", "scheduled__y")
    uri = ["--tracking-uri", mlflow_server.url]

    def saga(*argv):
        code = main([*argv, *uri])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, _, err = saga("promote", model_name, v1, "--alias", "champion", "--reason", "x", "--by", "eve")
    assert code == 1 and "its approval status is PendingManualApproval" in err
    assert saga("approve", model_name, v1, "--comment", "good", "--by", "alice")[0] == 0
    code, out, _ = saga("approve", model_name, v2, "--comment", "good too", "--by", "bob", "--json")
    assert code == 0 and json.loads(out)["status"] == T.APPROVED
    code, out, _ = saga(
        "promote", model_name, v1, "--alias", "champion", "--reason", "first", "--by", "alice"
    )
    assert code == 0 and f"@champion - -> {v1}" in out
    assert (
        saga("promote", model_name, v2, "--alias", "champion", "--reason", "better", "--by", "alice")[0] == 0
    )
    code, out, _ = saga("rollback", model_name, "--reason", "errors up", "--by", "oncall")
    assert code == 0 and f"rolled back {v2} -> {v1}" in out
    code, _, err = saga("rollback", model_name, "--reason", "again", "--by", "oncall")
    assert code == 1 and "no previous Approved champion" in err
    code, out, _ = saga("history", model_name, "--json")
    data = json.loads(out)
    assert data["aliases"] == {T.CHAMPION: v1}
    assert [(h["action"], h["from"], h["to"], h["by"]) for h in data["history"]] == [
        ("promote", None, v1, "alice"),
        ("promote", v1, v2, "alice"),
        ("rollback", v2, v1, "oncall"),
    ]
    code, out, _ = saga("history", model_name)
    assert code == 0 and "rollback" in out and "errors up" in out
    code, out, _ = saga("approve", model_name, v2, "--reject", "--comment", "rolled back", "--by", "sec")
    assert code == 0 and "Rejected" in out
    code, out, _ = saga("lineage", model_name, "@champion")
    assert code == 0 and "scheduled__x" in out and "by alice via api: good" in out
    code, out, _ = saga("lineage", model_name, v2, "--json")
    assert json.loads(out)["version"]["status"] == T.REJECTED
    code, out, _ = saga("lineage", "--dataset", "c11d1g02", "--json")
    assert [r["version"] for r in json.loads(out)] == [v2]
    # as the README shows it (issue 9): --model narrows --dataset to one registered model
    code, out, _ = saga("lineage", "--dataset", "c11d1g02", "--model", model_name, "--json")
    assert code == 0 and [r["version"] for r in json.loads(out)] == [v2]
    code, out, _ = saga("lineage", "--dataset", "c11d1g02", "--model", "another-model")
    assert code == 0 and "(no matching versions)" in out
    with pytest.raises(SystemExit):
        saga("lineage", "--model", model_name)  # --model without --dataset is a usage error
    assert "--model filters --dataset" in capsys.readouterr().err
    code, out, _ = saga("lineage", "--dag-run", "saga_training_pipeline", "scheduled__y")
    assert code == 0 and f"{model_name} v{v2}" in out
    code, _, err = saga("lineage", model_name + "-nope")
    assert code == 1 and "Unknown registered model" in err
