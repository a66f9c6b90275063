"""Real server processes for tests: re-exported from ``airflow_saga.devstack`` so tests and ``saga demo``
start exactly the same things."""

from __future__ import annotations

from airflow_saga.devstack.mlflow_server import MlflowServer
from airflow_saga.devstack.procs import free_port, stop, wait_http

__all__ = ["MlflowServer", "free_port", "stop", "wait_http"]
