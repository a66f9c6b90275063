"""The saga plugin is imported by every Airflow process: it must stay light and load with MLflow down."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

HEAVY = ("mlflow", "sklearn", "pandas", "evidently", "numpy", "pyarrow", "openlineage")
DEAD_MLFLOW = json.dumps({"conn_type": "mlflow", "host": "http://127.0.0.1:9"})  # nothing listens on port 9


def test_plugin_import_is_light_and_needs_no_mlflow():
    code = f"""
import sys, json
import airflow_saga.plugins as p
views = p.SagaPlugin.external_views
apps = p.SagaPlugin.fastapi_apps
print(json.dumps({{"heavy": sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}),
                  "fastapi_app_built": apps[0]["app"]._app is not None,
                  "views": views}}))
"""
    env = {**os.environ, "AIRFLOW_CONN_MLFLOW_DEFAULT": DEAD_MLFLOW}
    env.pop("SAGA_MLFLOW_UI_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["heavy"] == [], f"heavy modules imported by the plugin: {got['heavy']}"
    assert got["fastapi_app_built"] is False  # built on the API server's first request only
    assert got["views"][0] == {
        "name": "Models",
        "href": "/saga/models/",
        "destination": "nav",
        "url_route": "saga-models",
    }
    assert got["views"][1]["href"] == "http://127.0.0.1:9"  # the connection's URL, resolved without a request


def test_airflow_plugins_lists_saga_while_mlflow_is_down():
    env = {**os.environ, "AIRFLOW_CONN_MLFLOW_DEFAULT": DEAD_MLFLOW}
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "airflow"), "plugins", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    plugins = {p["name"]: p for p in json.loads(out.stdout[out.stdout.index("[") :])}
    assert "saga" in plugins, out.stdout[-2000:]
    assert "Models" in json.dumps(plugins["saga"])
