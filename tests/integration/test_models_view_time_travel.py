"""The Models view's time travel (``?at=``) and unrecorded-change warnings, over a real MLflow server.

In-process, with the view's ``reader`` dependency overridden by a fixed user: authentication and
authorization are tested against a real Airflow API server in ``tests/e2e/test_models_view.py``.
"""

from __future__ import annotations

import json
import re

import pytest

from airflow_saga.core import promotion
from airflow_saga.core import tags as T
from tests.support.registry import make_version

pytestmark = pytest.mark.integration


@pytest.fixture
def view(monkeypatch, mlflow_server):
    from fastapi.testclient import TestClient

    from airflow_saga.ui import app as view_app

    monkeypatch.setenv("SAGA_MODELS_VIEW_CONN_ID", "saga_view_tt")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SAGA_VIEW_TT", json.dumps({"conn_type": "mlflow", "host": mlflow_server.url})
    )
    view_app.clients.clear()
    app = view_app.create_app()
    app.dependency_overrides[view_app.reader] = lambda: "tester"
    yield TestClient(app, root_path="/saga")
    view_app.clients.clear()


def test_at_on_the_page_and_the_api(view, mlflow_client, model_name):
    v1, v2 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(2))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    promotion.promote(mlflow_client, model_name, v2, T.CHAMPION, by="bob", reason="second one")
    promotion.rollback(mlflow_client, model_name, by="carol", reason="errors")
    entries = promotion.history(mlflow_client, model_name)
    at = entries[1]["at"]  # v2's promotion: v2 held champion until the rollback

    data = view.get(f"/api/models/{model_name}", params={"at": at}).json()
    assert data["at"]["at"] == at and data["at"]["aliases"][T.CHAMPION]["version"] == v2
    assert data["at"]["aliases"][T.CHAMPION]["entry"]["seq"] == 2
    assert data["model"]["aliases"] == {T.CHAMPION: v1}  # the rest of the page is today's
    assert view.get(f"/api/models/{model_name}").json()["at"] is None

    r = view.get(f"/models/{model_name}", params={"at": at})
    assert r.status_code == 200
    assert re.search(rf'<tr data-alias="champion" data-version="{v2}">', r.text)
    assert "#2 " in r.text and "by bob: second one" in r.text
    assert re.search(r'<tr data-alias="challenger" data-version="">', r.text)


@pytest.mark.parametrize("path", ["/models/{}", "/api/models/{}"])
def test_bad_at_is_a_400_naming_the_value(view, mlflow_client, model_name, path):
    make_version(mlflow_client, model_name)
    r = view.get(path.format(model_name), params={"at": "next friday"})
    assert r.status_code == 400 and "next friday" in r.text and "ISO-8601" in r.text
    r = view.get(path.format(model_name), params={"at": "1999-01-01T00:00:00Z"})
    assert r.status_code == 400 and "did not exist at 1999-01-01T00:00:00.000Z" in r.text
    r = view.get(path.format("no-such-model-view-at"), params={"at": "2026-01-01"})
    assert r.status_code == 404


def test_unrecorded_moves_in_the_view(view, mlflow_client, model_name):
    v1, v2, v3 = (make_version(mlflow_client, model_name, status=T.APPROVED) for _ in range(3))
    promotion.promote(mlflow_client, model_name, v1, T.CHAMPION, by="alice", reason="first")
    mlflow_client.set_registered_model_alias(model_name, T.CHAMPION, v2)  # as in the MLflow UI
    page = view.get(f"/models/{model_name}").text
    assert re.search(r'class="warn unrecorded" data-alias="champion"', page)
    promotion.promote(mlflow_client, model_name, v3, T.CHAMPION, by="bob", reason="v3")
    data = view.get(f"/api/models/{model_name}").json()
    assert data["timeline"]["unrecorded"] == []
    assert [(g["alias"], g["recorded"], g["found"]) for g in data["timeline"]["gaps"]] == [
        (T.CHAMPION, v1, v2)
    ]
    page = view.get(f"/models/{model_name}").text
    assert f"went from v{v1} to v{v2} outside saga, between #1" in page
