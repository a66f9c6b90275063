"""Airflow plugin: an "MLflow" entry in the Airflow navigation bar.

Loaded through the ``airflow.plugins`` entry point (always loaded, unlike provider-info plugins). The URL is
resolved once at plugin load: ``SAGA_MLFLOW_UI_URL``, else the ``mlflow_default`` connection (its
``extra.ui_url`` or host), else http://127.0.0.1:5000. Connection lookup failures never break plugin loading.
"""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin

DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"


def mlflow_ui_url() -> str:
    env = os.environ.get("SAGA_MLFLOW_UI_URL")
    if env:
        return env.rstrip("/")
    try:
        from airflow.sdk import BaseHook

        from airflow_saga.hooks.mlflow import settings_from_connection

        url = settings_from_connection(BaseHook.get_connection("mlflow_default")).browser_url
        if url:
            return url
    except Exception:  # no connection, no DB, or a non-HTTP tracking URI
        pass
    return DEFAULT_MLFLOW_UI


class SagaPlugin(AirflowPlugin):
    name = "saga"
    external_views = [{"name": "MLflow", "href": mlflow_ui_url(), "destination": "nav"}]
