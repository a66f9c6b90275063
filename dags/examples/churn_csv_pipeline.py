"""Your CSV plus a scikit-learn estimator: the whole governed pipeline in one call.

train -> evaluate against the champion -> quality gate -> register -> approve -> promote, scheduled on
this model's drift Asset so that a drift alert from saga_drift_monitor retrains it.
"""

from __future__ import annotations

from pathlib import Path

from airflow_saga.pipelines import training_pipeline

CSV = Path(__file__).parent / "data" / "churn.csv"  # yours: a path, s3://..., sql:<conn_id>:<query>, ...

dag = training_pipeline(
    "churn-csv",
    source=str(CSV),
    target="churned",
    train="sklearn.ensemble.RandomForestClassifier",
    hyperparameters={"n_estimators": 100, "max_depth": 6, "random_state": 0},
    conditions="accuracy >= 0.7 and f1_macro >= 0.65 and improves(f1_macro, min_absolute=-0.01)",
    approval="airflow",  # a human approves in Airflow's Required Actions view
)
