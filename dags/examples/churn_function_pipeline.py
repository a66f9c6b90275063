"""Your own training function (@task.saga_train), wired step by step.

The function gets the CSV's training rows (X, y) and returns a fitted model; the step logs it like
TrainModelOperator does (params, dataset with content digest, model with signature, lineage tags).
Scheduled on this model's drift Asset, so a drift alert retrains it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_saga.assets import drift_asset
from airflow_saga.operators.approval import ApproveModelOperator, model_approval_request
from airflow_saga.operators.evaluate import EvaluateModelOperator
from airflow_saga.operators.gate import QualityGateOperator
from airflow_saga.operators.promote import PromoteModelOperator
from airflow_saga.operators.register import RegisterModelOperator

MODEL = "churn-function"
CSV = Path(__file__).parent / "data" / "churn.csv"


def add_features(frame):
    """Feature engineering in the DAG file: pickled into the model, so serving needs no DAG file."""
    out = frame.copy()
    out["charges_per_month_of_tenure"] = out["monthly_charges"] / out["tenure_months"].clip(lower=1)
    return out


with DAG(dag_id="churn_function_pipeline", schedule=drift_asset(MODEL), catchup=False, tags=["saga"]):

    @task.saga_train(
        model_name=MODEL,
        data_source=str(CSV),
        target="churned",
        hyperparameters={"C": 0.5, "max_iter": 2000},
    )
    def fit(X, y, hyperparameters):
        from sklearn.linear_model import LogisticRegression  # heavy imports inside: the DAG parses fast
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler

        model = make_pipeline(
            FunctionTransformer(add_features), StandardScaler(), LogisticRegression(**hyperparameters)
        )
        return model.fit(X, y)

    training = fit()
    evaluate = EvaluateModelOperator(task_id="evaluate", model_name=MODEL, training=training)
    gate = QualityGateOperator(
        task_id="quality_gate",
        conditions="accuracy >= 0.7 and improves(f1_macro, min_absolute=-0.01)",
        report=evaluate.output,
    )
    register = RegisterModelOperator(
        task_id="register",
        model_name=MODEL,
        training=training,
        report=evaluate.output,
        decision=gate.output["decision"],
    )
    version = "{{ ti.xcom_pull(task_ids='register', key='version') }}"
    ask = model_approval_request(model_name=MODEL, version=version, response_timeout=timedelta(hours=72))
    record = ApproveModelOperator(task_id="record_airflow_approval", model_name=MODEL, version=version)
    promote = PromoteModelOperator(
        task_id="promote",
        model_name=MODEL,
        version=version,
        alias="auto",  # champion if the model has none yet, else challenger
        reason="approved in Airflow, run {{ run_id }}",
    )
    gate >> register >> ask >> record >> promote
