"""airflow-saga: controlled, auditable, reversible change of production ML models on Airflow + MLflow."""

from __future__ import annotations

__version__ = "0.1.0"
