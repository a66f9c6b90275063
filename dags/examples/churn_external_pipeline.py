"""A model trained elsewhere (a notebook, another scheduler, a vendor), evaluated and governed here.

evaluate (on held-out data, against the champion) -> quality gate -> register -> approve -> promote.
model_uri is a Param: trigger with {"model_uri": "runs:/<run_id>/model"} to bring any MLflow model; the
default follows the alias "candidate" of the registered model the other team writes to. A drift alert
for this model re-runs the pipeline on whatever that alias holds then.
"""

from __future__ import annotations

from pathlib import Path

from airflow_saga.pipelines import training_pipeline

HOLDOUT = Path(__file__).parent / "data" / "churn_holdout.csv"  # rows the model never saw

dag = training_pipeline(
    "churn-external",
    model_uri="models:/churn-notebook@candidate",
    source=str(HOLDOUT),
    target="churned",
    conditions="accuracy >= 0.7 and improves(f1_macro, min_absolute=-0.01)",
    approval="mlflow",  # someone sets saga.approval.status=Approved on the version in MLflow
)
