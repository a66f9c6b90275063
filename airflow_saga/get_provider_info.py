"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    from airflow_saga import __version__

    return {
        "package-name": "airflow-saga",
        "name": "Saga (MLflow model lifecycle)",
        "description": "SageMaker-style train/evaluate/gate/register/approve/promote/rollback, shadow "
        "comparison and drift monitoring on the MLflow model registry.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "MLflow",
                "external-doc-url": "https://mlflow.org/docs/latest/",
                "tags": ["software"],
            },
        ],
        "connection-types": [
            {
                "connection-type": "mlflow",
                "hook-class-name": "airflow_saga.hooks.mlflow.MlflowHook",
                "hook-name": "MLflow",
            },
        ],
        "hooks": [{"integration-name": "MLflow", "python-modules": ["airflow_saga.hooks.mlflow"]}],
        "operators": [
            {
                "integration-name": "MLflow",
                "python-modules": [
                    "airflow_saga.operators.train",
                    "airflow_saga.operators.evaluate",
                    "airflow_saga.operators.gate",
                    "airflow_saga.operators.register",
                    "airflow_saga.operators.promote",
                    "airflow_saga.operators.rollback",
                    "airflow_saga.operators.approval",
                ],
            },
        ],
        "task-decorators": [
            {"name": "saga_train", "class-name": "airflow_saga.decorators.saga_train.saga_train_task"},
        ],
        "sensors": [{"integration-name": "MLflow", "python-modules": ["airflow_saga.sensors.approval"]}],
        "triggers": [{"integration-name": "MLflow", "python-modules": ["airflow_saga.triggers.approval"]}],
        "extra-links": ["airflow_saga.links.MlflowRunLink", "airflow_saga.links.MlflowModelVersionLink"],
    }
