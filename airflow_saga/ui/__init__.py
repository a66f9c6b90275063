"""The Models view: a FastAPI app on Airflow's API server, shown in Airflow's navigation.

``plugins.py`` is imported by every Airflow process (scheduler, workers, DAG processor), so it must stay
light and must load even when MLflow is down. It therefore mounts ``LazyApp``, a plain ASGI callable that
imports FastAPI, Jinja2, MLflow and the view's code (``ui.app``) on the first request only, which only
ever reaches the API server.
"""

from __future__ import annotations

import threading
from typing import Any

URL_PREFIX = "/saga"


class LazyApp:
    """ASGI app that builds ``airflow_saga.ui.app.create_app()`` on its first call."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _build(self) -> Any:
        with self._lock:
            if self._app is None:
                from airflow_saga.ui.app import create_app

                self._app = create_app()
        return self._app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = self._app or self._build()
        await app(scope, receive, send)
