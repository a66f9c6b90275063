"""Airflow plugin: the "Models" view and an "MLflow" link in the Airflow navigation bar.

Loaded through the ``airflow.plugins`` entry point (always loaded, unlike provider-info plugins), so every
Airflow process imports this module: it imports only Airflow and the standard library, and nothing here
talks to MLflow. The Models view is a FastAPI app mounted on the API server under ``/saga`` and shown as
an external view embedded in the UI at ``/plugin/saga-models``; it is built on its first request
(``airflow_saga.ui.LazyApp``), enforces Airflow's authentication and DAG read permission, and reads MLflow
per request through the ``mlflow_default`` connection.

The MLflow link's URL is resolved once at plugin load: ``SAGA_MLFLOW_UI_URL``, else the ``mlflow_default``
connection (its ``extra.ui_url`` or host), else http://127.0.0.1:5000. Connection lookup failures never
break plugin loading.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from airflow.plugins_manager import AirflowPlugin

from airflow_saga.ui import URL_PREFIX, LazyApp

DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
MODELS_ROUTE = "saga-models"


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


def api_root_path() -> str:
    """The path Airflow's API server is served under (``[api] base_url``'s path; usually empty)."""
    try:
        from airflow.configuration import conf

        return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    except Exception:
        return ""


class SagaPlugin(AirflowPlugin):
    name = "saga"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "airflow-saga Models view"}]
    external_views = [
        {
            "name": "Models",
            "href": f"{api_root_path()}{URL_PREFIX}/models/",
            "destination": "nav",
            "url_route": MODELS_ROUTE,
        },
        {"name": "MLflow", "href": mlflow_ui_url(), "destination": "nav"},
    ]
