"""Lineage tags are flat strings under the documented names."""

from __future__ import annotations

from airflow_saga import __version__
from airflow_saga.core import tags as T
from airflow_saga.core.lineage import lineage_tags


def test_lineage_tags_cover_the_chain():
    out = lineage_tags(
        run_id="r1",
        model_uri="models:/m-1",
        dataset={"digest": "abcd", "source": "s3://b/k.csv", "rows": 10},
        airflow={
            "dag_id": "d",
            "run_id": "manual__1",
            "task_id": "register",
            "try_number": "2",
            "run_url": "http://af/dags/d/runs/manual__1",
            "dag_file_hash": "ff00",
        },
        estimator="sklearn.linear_model.LogisticRegression",
        metrics={"accuracy": 0.95},
        gate={"passed": True, "expression": "accuracy >= 0.9", "report_uri": "runs:/r1/gate/decision.json"},
        eval_report_uri="runs:/r1/evaluation/report.json",
    )
    assert out[T.RUN_ID] == "r1"
    assert out[T.DATASET_DIGEST] == "abcd" and out[T.DATASET_SOURCE] == "s3://b/k.csv"
    assert out[T.DATASET_ROWS] == "10"
    assert out[T.PACKAGE_VERSION] == __version__ and out[T.DAG_FILE_HASH] == "ff00"
    assert out[T.AIRFLOW_DAG_ID] == "d" and out[T.AIRFLOW_RUN_ID] == "manual__1"
    assert out[T.AIRFLOW_TASK_ID] == "register" and out[T.AIRFLOW_TRY_NUMBER] == "2"
    assert out[T.AIRFLOW_RUN_URL].startswith("http://af/")
    assert float(out["saga.metric.accuracy"]) == 0.95
    assert out[T.GATE_DECISION] == "passed" and out[T.GATE_SUMMARY] == "accuracy >= 0.9"
    assert all(isinstance(v, str) for v in out.values())


def test_missing_facts_are_dropped_not_stringified_as_none():
    out = lineage_tags(run_id="r", model_uri="u", gate={"passed": False})
    assert "None" not in out.values()
    assert out[T.GATE_DECISION] == "blocked"
