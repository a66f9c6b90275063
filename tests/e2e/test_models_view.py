"""The Models view on a real Airflow API server: authentication, authorization, 404s, hostile input.

Plugin FastAPI apps are not protected by Airflow by default; these requests go to the api-server process the
e2e stack runs, with no token, a forged token, the UI's cookie, and the tokens of an admin and of a viewer.
"""

from __future__ import annotations

import pytest
import requests

from airflow_saga.core import model_story, promotion
from airflow_saga.core import tags as T

pytestmark = pytest.mark.e2e


def _token(url: str, user: str) -> str:
    r = requests.post(f"{url}/auth/token", json={"username": user, "password": user}, timeout=30)
    r.raise_for_status()
    return r.json()["access_token"]


@pytest.fixture(scope="module")
def view(e2e_stack, e2e_story):
    url = e2e_stack["airflow"].url
    return {"url": url, "admin": _token(url, "admin"), "viewer": _token(url, "vera"), **e2e_story}


def _get(view, path: str, who: str | None = "viewer", **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {view[who]}"} if who else {}
    return requests.get(f"{view['url']}/saga{path}", headers=headers, timeout=60, allow_redirects=False, **kw)


def test_plugin_is_listed_with_its_view(view):
    r = requests.get(
        f"{view['url']}/api/v2/plugins", headers={"Authorization": f"Bearer {view['admin']}"}, timeout=30
    )
    saga = next(p for p in r.json()["plugins"] if p["name"] == "saga")
    names = {v["name"]: v for v in saga["external_views"]}
    assert names["Models"]["href"] == "/saga/models/" and names["Models"]["url_route"] == "saga-models"


@pytest.mark.parametrize("path", ["/models/", "/models/{name}", "/models/{name}/versions/1", "/api/models"])
def test_anonymous_and_forged_requests_are_refused(view, path):
    path = path.format(name=view["name"])
    assert _get(view, path, who=None).status_code == 401
    forged = requests.get(
        f"{view['url']}/saga{path}", headers={"Authorization": "Bearer not-a-jwt"}, timeout=30
    )
    assert forged.status_code in (401, 403)
    cookie = requests.get(f"{view['url']}/saga{path}", cookies={"_token": "forged"}, timeout=30)
    assert cookie.status_code in (401, 403)
    assert view["name"] not in forged.text + cookie.text


def test_a_viewer_reads_the_view_and_the_json_is_the_registry_story(view):
    name, client = view["name"], view["client"]
    page = _get(view, f"/models/{name}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count('<tr data-version="') == 3
    listing = _get(view, "/models/")
    assert listing.status_code == 200 and f'data-model="{name}"' in listing.text
    got = _get(view, f"/api/models/{name}", who="admin").json()
    want = model_story.model_story(client, name, ui_base=view["settings"].browser_url)
    for key in ("versions", "history", "counts", "metric_names"):
        assert got[key] == want[key]
    assert got["model"]["aliases"] == promotion.aliases(client, name)
    assert got["timeline"]["lanes"] == want["timeline"]["lanes"]
    detail = _get(view, f"/api/models/{name}/versions/{view['versions']['v2']}").json()
    assert len(detail["shadow"]) == 2 and [d["verdict"] for d in detail["drift"]] == ["no_drift", "drift"]
    assert _get(view, f"/models/{name}/versions/{view['versions']['v2']}").status_code == 200


def test_the_ui_cookie_authenticates_like_the_browser(view):
    r = requests.get(f"{view['url']}/saga/models/", cookies={"_token": view["viewer"]}, timeout=60)
    assert r.status_code == 200 and "<h1>Models</h1>" in r.text


def test_unknown_models_and_versions_are_404(view):
    for path in ("/models/no-such-model", "/api/models/no-such-model", f"/models/{view['name']}/versions/99"):
        r = _get(view, path)
        assert r.status_code == 404, (path, r.status_code, r.text[:300])
    assert "Unknown registered model &#39;no-such-model&#39;" in _get(view, "/models/no-such-model").text
    assert _get(view, "/api/models/no-such-model").json() == {
        "detail": "Unknown registered model 'no-such-model'"
    }


@pytest.mark.parametrize(
    "path",
    [
        "/models/x'%20OR%20name%20LIKE%20'%25",
        "/models/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/models/a%2Fb",
        "/models/" + "x" * 400,
        "/models/bad%0Aname",
        "/models/{name}/versions/abc",
        "/models/{name}/versions/-1",
        "/models/{name}/versions/1%20OR%201=1",
        "/api/models/{name}/versions/99999999999999999999",
        "/models/{name}?hpage=-1",
        "/models/{name}?hpage=abc",
        "/models/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    ],
)
def test_hostile_input_is_a_4xx_naming_the_problem(view, path):
    r = _get(view, path.format(name=view["name"]))
    assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
    assert "<script>alert(1)</script>" not in r.text


def test_current_aliases_on_the_page_are_the_registry_holders(view):
    page = _get(view, f"/models/{view['name']}").text
    for alias, version in promotion.aliases(view["client"], view["name"]).items():
        assert f'data-current-alias="{alias}" data-version="{version}"' in page
    assert T.CHALLENGER not in promotion.aliases(view["client"], view["name"])
