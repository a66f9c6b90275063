"""The Models view's answers when MLflow is down or its connection is missing: 503 naming it, never a 500.

In-process, with the view's ``reader`` dependency overridden by a fixed user: authentication and authorization
are tested against a real Airflow API server in ``tests/e2e/test_models_view.py``; this file is about what the
view does after a request was let in.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def view(monkeypatch):
    from fastapi.testclient import TestClient

    from airflow_saga.ui import app as view_app

    monkeypatch.setenv("SAGA_MODELS_VIEW_CONN_ID", "saga_view_test")
    view_app.clients.clear()
    app = view_app.create_app()
    app.dependency_overrides[view_app.reader] = lambda: "tester"
    yield TestClient(app, root_path="/saga")
    view_app.clients.clear()


def test_mlflow_down_is_a_503_naming_the_server(view, monkeypatch):
    dead = "http://127.0.0.1:9"
    monkeypatch.setenv(
        "AIRFLOW_CONN_SAGA_VIEW_TEST",
        json.dumps({"conn_type": "mlflow", "host": dead, "extra": {"max_retries": 0, "connect_timeout": 2}}),
    )
    for path, kind in (("/models/", "text/html"), ("/api/models/x", "application/json")):
        r = view.get(path)
        assert r.status_code == 503 and r.headers["content-type"].startswith(kind)
        assert dead in r.text


def test_missing_connection_is_a_503_naming_it(view, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SAGA_VIEW_TEST", raising=False)
    r = view.get("/api/models")
    assert r.status_code == 503 and "saga_view_test" in r.json()["detail"]


def test_real_server_through_the_app(view, monkeypatch, mlflow_server, mlflow_client, model_name):
    from airflow_saga.core import tags as T
    from tests.support.registry import make_version

    conn = json.dumps({"conn_type": "mlflow", "host": mlflow_server.url})
    monkeypatch.setenv("AIRFLOW_CONN_SAGA_VIEW_TEST", conn)
    make_version(mlflow_client, model_name, status=T.APPROVED)
    r = view.get(f"/models/{model_name}")
    assert r.status_code == 200 and 'data-version="1"' in r.text
    assert 'href="/saga/models/' in r.text  # links stay under the mount point
    assert view.get(f"/api/models/{model_name}").json()["counts"][T.APPROVED] == 1
    assert view.get("/", follow_redirects=False).headers["location"] == "/saga/models/"
