"""Pipelines built by airflow_saga.pipelines.training_pipeline, for the new user's bad-input tests.

A callable data source is allowed from tests.support (the factory's allowed_source_prefixes), so a
function that returns no DataFrame is reached; manual schedule, so nothing else starts them. And a DAG
that records one drift Asset event for a model, to check which pipelines it queues.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_saga.operators.drift import DriftAssetEventOperator
from airflow_saga.pipelines import training_pipeline

trained = training_pipeline(
    "saga-test-guide",
    dag_id="saga_test_guide_trained",
    schedule=None,
    source="sklearn:breast_cancer",
    train="sklearn.linear_model.LogisticRegression",
    hyperparameters={"max_iter": 3000},
    conditions="accuracy >= 0.8",
    approval="auto",
    allowed_source_prefixes=["tests.support."],
)

external = training_pipeline(
    "saga-test-guide-external",
    dag_id="saga_test_guide_external",
    schedule=None,
    model_uri="runs:/0123456789abcdef0123456789abcdef/model",
    source="sklearn:breast_cancer",
    conditions="accuracy >= 0.8",
    approval="auto",
)

with DAG(
    dag_id="saga_test_guide_drift_event",
    schedule=None,
    params={"model_name": Param("churn-function", type="string")},
    tags=["test"],
):
    # What saga_drift_monitor's emit_drift_event does with a drift verdict, without the monitoring run
    # (tests/integration/test_monitoring_dags.py runs the whole monitor).
    DriftAssetEventOperator(
        task_id="emit_drift_event", result={"model_name": "{{ params.model_name }}", "outcome": "drift"}
    )
