"""saga_training_pipeline: train -> evaluate -> gate -> register -> approve -> promote, on MLflow.

Built by ``airflow_saga.pipelines.training_pipeline``, the same call a user's own pipeline makes (see the
README's "Write your own pipeline" and ``dags/examples/``).

Approval is a Param: ``airflow`` asks a human in Airflow's human-in-the-loop UI (Required Actions), ``mlflow``
waits for someone to set ``saga.approval.status`` on the version in MLflow (a deferrable sensor), ``auto``
registers the version as Approved because the gate passed. After approval the version becomes
``challenger``, or ``champion`` when the model has none yet.

Every input is an Airflow Param, so a run is configured from the UI's trigger form or the REST API's
``conf``. Steps hand results on as XComArgs (``train.output``), so the DAG runs with Airflow's default
template settings. A cache hit that reuses a model already registered goes to ``already_registered``: no
second version, no second approval, no promotion over itself. No template uses ``{{ ds }}``: runs
triggered from the UI or REST have no logical date. The DAG is scheduled on the drift Asset of its default
model (``saga://drift/saga-breast-cancer``), so a drift alert retrains it; asset-triggered runs use the
Params' defaults. This file imports only Airflow and airflow_saga, so it parses in milliseconds.
"""

from __future__ import annotations

from airflow_saga.pipelines import DEFAULT_CONDITIONS, training_pipeline

dag = training_pipeline(
    "saga-breast-cancer",
    dag_id="saga_training_pipeline",
    description="Train, evaluate against the champion, gate, and register a model version in MLflow",
    source="sklearn:breast_cancer",
    target="target",
    train="sklearn.linear_model.LogisticRegression",
    hyperparameters={"max_iter": 5000},
    conditions=DEFAULT_CONDITIONS,
    approval="airflow",
)
