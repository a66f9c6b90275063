"""The shipped training DAG under dag.test() against a real MLflow server (no mocks)."""

from __future__ import annotations

import pytest

from airflow_saga.core import tags as T
from tests.integration.conftest import SKIP_APPROVAL, run_dag, task_states, xcom

pytestmark = pytest.mark.integration


def _versions(client, name):
    return client.search_model_versions(f"name='{name}'")


def test_pipeline_registers_pending_version_with_full_lineage(training_dag, mlflow_client, model_name):
    dr = run_dag(
        training_dag,
        {"model_name": model_name, "approval_mode": "airflow"},
        mark_success_pattern=SKIP_APPROVAL,
    )
    assert dr.state == "success", task_states(dr)
    reg = xcom(dr, "register")
    assert reg["created"] is True and reg["version"] == "1"

    mv = mlflow_client.get_model_version(model_name, "1")
    tags = mv.tags
    train = xcom(dr, "train")
    assert tags[T.APPROVAL_STATUS] == T.PENDING
    assert tags[T.RUN_ID] == train["run_id"] == mv.run_id
    assert tags[T.MODEL_URI] == train["model_uri"] == mv.source
    assert tags[T.DATASET_DIGEST] == train["dataset"]["digest"]
    assert tags[T.DATASET_SOURCE] == "sklearn:breast_cancer"
    assert tags[T.PACKAGE_VERSION]
    assert len(tags[T.DAG_FILE_HASH]) == 16
    assert tags[T.AIRFLOW_DAG_ID] == "saga_training_pipeline"
    assert tags[T.AIRFLOW_RUN_ID] == dr.run_id
    assert tags[T.AIRFLOW_TASK_ID] == "register"
    assert dr.run_id.replace(":", "%3A").split("+")[0] in tags[T.AIRFLOW_RUN_URL]
    assert tags[T.GATE_DECISION] == "passed"
    assert float(tags["saga.metric.accuracy"]) >= 0.9
    assert tags[T.EVAL_REPORT_URI].endswith("evaluation/report.json")

    # The training run carries params, the dataset input and the Airflow tags.
    run = mlflow_client.get_run(train["run_id"])
    assert run.data.params["estimator"] == "sklearn.linear_model.LogisticRegression"
    assert run.data.tags["saga.airflow.dag_id"] == "saga_training_pipeline"
    assert run.data.tags["saga.airflow.try_number"] == "1"
    digests = {d.dataset.digest for d in run.inputs.dataset_inputs}
    assert digests == {train["dataset"]["digest"]}
    # Evaluation report and gate decision are artifacts on the run, matching XCom.
    report = xcom(dr, "evaluate")
    assert report["champion"] is None and report["candidate"]["metrics"]["accuracy"] >= 0.9
    decision = xcom(dr, "quality_gate", "decision")
    assert decision["passed"] is True and decision["checks"]


def test_second_run_compares_against_champion_and_impossible_threshold_blocks(
    training_dag, mlflow_client, model_name
):
    dr1 = run_dag(training_dag, {"model_name": model_name, "approval_mode": "auto"})
    assert dr1.state == "success", task_states(dr1)
    assert xcom(dr1, "promote")["alias"] == T.CHAMPION  # the first approved version becomes champion
    # a fresh parse for the second run, since dag.test(run_conf) leaves the conf in the DAG's params
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import DAGS_DIR

    training_dag = DagBag(dag_folder=str(DAGS_DIR / "saga_training_pipeline.py")).get_dag(
        "saga_training_pipeline"
    )
    assert mlflow_client.get_model_version(model_name, "1").tags[T.APPROVAL_STATUS] == T.APPROVED
    assert mlflow_client.get_registered_model(model_name).aliases == {T.CHAMPION: "1"}

    dr2 = run_dag(training_dag, {"model_name": model_name, "conditions": "accuracy >= 1.01"})
    assert dr2.state == "failed"
    states = task_states(dr2)
    assert states["quality_gate"] == "failed" and states["register"] in ("upstream_failed", "skipped")
    report = xcom(dr2, "evaluate")
    assert report["champion"]["version"] == "1" and "accuracy" in report["champion"]["metrics"]
    decision = xcom(dr2, "quality_gate", "decision")
    assert decision["passed"] is False
    assert any("1.01" in r for r in decision["reasons"])
    assert len(_versions(mlflow_client, model_name)) == 1, "a blocked candidate must register nothing"
    run = mlflow_client.get_run(xcom(dr2, "train")["run_id"])
    assert run.data.tags[T.GATE_DECISION] == "blocked"

    # a passing third candidate, auto-approved, becomes challenger beside the champion
    dag3 = DagBag(dag_folder=str(DAGS_DIR / "saga_training_pipeline.py")).get_dag("saga_training_pipeline")
    dr3 = run_dag(dag3, {"model_name": model_name, "approval_mode": "auto"})
    assert dr3.state == "success", task_states(dr3)
    assert mlflow_client.get_registered_model(model_name).aliases == {T.CHAMPION: "1", T.CHALLENGER: "2"}


def test_cache_hit_reuses_model_and_says_so(training_dag, mlflow_client, model_name, mlflow_server, capsys):
    """The pipeline twice with cache on: one version, both Airflow runs in its lineage, one promotion."""
    from airflow_saga.cli import main
    from airflow_saga.core import lineage_query, promotion

    conf = {
        "model_name": model_name,
        "cache": True,
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "hyperparameters": {"n_estimators": 20, "random_state": 0},
    }
    # dag.test() drops earlier runs of the same DAG, so read each run's results before the next one.
    dr1 = run_dag(training_dag, conf)
    assert dr1.state == "success", task_states(dr1)
    t1, reg1 = xcom(dr1, "train"), xcom(dr1, "register")
    assert task_states(dr1)["promote"] == "success"
    dr2 = run_dag(training_dag, conf)
    assert dr2.state == "success", task_states(dr2)
    t2, reg2 = xcom(dr2, "train"), xcom(dr2, "register")
    assert t1["cache_hit"] is False and t2["cache_hit"] is True and t2["origin"] == "cache"
    assert t2["model_uri"] == t1["model_uri"] and t2["cache_source_run_id"] == t1["run_id"]
    tags = mlflow_client.get_run(t2["run_id"]).data.tags
    assert tags[T.CACHE_HIT] == "true" and tags[T.CACHE_SOURCE_RUN] == t1["run_id"]

    # One model, one version: the hit returned version 1 and skipped approval and promotion.
    assert reg1["created"] is True and reg2 == {
        **reg2,
        "version": reg1["version"],
        "created": False,
        "reused": True,
    }
    assert [v.version for v in _versions(mlflow_client, model_name)] == [reg1["version"]]
    states = task_states(dr2)
    assert states["already_registered"] == "success"
    assert states["promote"] == "skipped" and states["auto_approved"] == "skipped"
    history = promotion.history(mlflow_client, model_name)
    assert [(h["action"], h["to"]) for h in history] == [("promote", reg1["version"])]
    assert mlflow_client.get_registered_model(model_name).aliases == {T.CHAMPION: reg1["version"]}

    # Both Airflow runs are in the version's lineage; the human form says who actually fitted it.
    story = lineage_query.lineage(mlflow_client, model_name, reg1["version"])
    assert story["airflow"]["run_id"] == dr1.run_id
    reuses = story["reuses"]["entries"]
    assert [(e["dag_run_id"], e["run_id"], e["fitted_by"]) for e in reuses] == [
        (dr2.run_id, t2["run_id"], t1["run_id"])
    ]
    assert main(["lineage", model_name, reg1["version"], "--tracking-uri", mlflow_server.url]) == 0
    text = capsys.readouterr().out
    assert "reused by 1 later cache hit(s)" in text and f"fitted by run {t1['run_id']}" in text
    assert dr2.run_id in text and t2["run_id"] in text

    # A retry of the second run's register records nothing twice.
    from airflow_saga.core.registration import register_candidate

    again = register_candidate(mlflow_client, model_name, training=t2)
    assert again["reused"] and again["version"] == reg1["version"]
    story = lineage_query.lineage(mlflow_client, model_name, reg1["version"])
    assert len(story["reuses"]["entries"]) == 1


@pytest.mark.parametrize(
    ("conf", "failed_task"),
    [
        ({"target": "no_such_column"}, "train"),
        ({"estimator": "sklearn.linear_model.NoSuchModel"}, "train"),
        ({"hyperparameters": {"not_a_param": 1}}, "train"),
        ({"conditions": "accuracy >= >= 0.9"}, "quality_gate"),
        ({"conditions": "balanced_acc >= 0.9"}, "quality_gate"),
    ],
    ids=[
        "missing-target",
        "unknown-estimator",
        "unknown-hyperparameter",
        "malformed-condition",
        "missing-metric",
    ],
)
def test_bad_input_fails_clearly_and_registers_nothing(
    training_dag, mlflow_client, model_name, conf, failed_task
):
    dr = run_dag(training_dag, {"model_name": model_name, **conf})
    assert dr.state == "failed"
    states = task_states(dr)
    assert states[failed_task] == "failed", states
    assert states["register"] in ("upstream_failed", "skipped")
    assert _versions(mlflow_client, model_name) == []


def test_bad_data_files_fail_and_register_nothing(training_dag, mlflow_client, model_name, tmp_path):
    import numpy as np
    import pandas as pd

    empty = tmp_path / "empty.csv"
    empty.write_text("a,b,target\n")
    nan = tmp_path / "nan.parquet"
    frame = pd.DataFrame({"a": [1.0, np.nan] * 20, "b": [np.inf, 0.5] * 20, "target": [0, 1] * 20})
    frame.to_parquet(nan)
    for source in (empty, nan):
        dr = run_dag(training_dag, {"model_name": model_name, "data_source": str(source)})
        assert dr.state == "failed"
        assert task_states(dr)["train"] == "failed"
    assert _versions(mlflow_client, model_name) == []
