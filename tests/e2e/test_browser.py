"""A person's path through the two UIs, in a real browser: Playwright driving Debian's Chromium, headless.

Why: the REST tests prove the API; this proves what a reviewer actually clicks works — the Airflow trigger
form feeds the DAG's Params, the Human-in-the-loop "Required Actions" view approves the version, and MLflow's
model-version page shows the approval and lineage tags airflow-saga wrote. Screenshots of every step land in
``test-artifacts/browser/`` (git-ignored; CI keeps them as artifacts).

Chromium comes from Debian (``scripts/install-browser.sh``, run by ``scripts/test.sh``): Playwright's own
browser download cannot reach its CDN from the project's machines.

The second test opens airflow-saga's Models view from Airflow's navigation (an iframe inside Airflow's UI) as
a read-only viewer and checks that its tables and alias timeline say what the registry says.

Selectors were taken from the live DOM of Airflow 3.3.2's React UI and MLflow 3.17.2's UI. The trigger form's
``<label for>`` does not match its input's id, so the model_name field is found by its ``name`` attribute.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import pytest

from airflow_saga.core import tags as T
from airflow_saga.core.mlflow_client import MlflowSettings, build_client
from tests.conftest import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from airflow_saga.devstack.api import AirflowApi

pytestmark = pytest.mark.e2e

DAG = "saga_training_pipeline"
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "test-artifacts" / "browser"
# Flags verified with Debian's Chromium as root in a container (notes: celery-postgres-redis-and-browser.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must have /usr/bin/chromium: scripts/test.sh runs scripts/install-browser.sh")
        pytest.skip("Debian chromium is not installed: run scripts/install-browser.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Shots:
    """Numbered screenshots, so the folder reads as the story of the test."""

    def __init__(self, page: Page, folder: Path = SHOTS) -> None:
        self.page, self.n, self.folder = page, 0, folder
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()

    def __call__(self, name: str, *, full_page: bool = False) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def _tag_row(page: Page, key: str) -> str:
    """The MLflow tags table is a small scroll box: bring the tag's row into view (for the screenshot) and
    return its text."""
    row = page.get_by_role("row").filter(has=page.get_by_text(key, exact=True))
    row.first.wait_for(state="attached", timeout=30_000)
    row.first.scroll_into_view_if_needed()
    return row.first.inner_text()


def test_trigger_form_hitl_approval_and_mlflow_tags_in_chromium(e2e_stack, browser):
    api: AirflowApi = e2e_stack["api"]
    airflow_url, mlflow_url = e2e_stack["airflow"].url, e2e_stack["mlflow"].url
    name = f"browser-{uuid.uuid4().hex[:8]}"
    api.wait_for_dag(DAG)
    api.unpause(DAG)

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    shot = Shots(page)
    try:
        # 1. sign in to Airflow as bob (SimpleAuthManager's login form)
        page.goto(f"{airflow_url}/")
        page.get_by_label("Username").fill("bob")
        page.get_by_label("Password").fill("bob")
        shot("airflow-login")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)

        # 2. the DAG page, then its trigger form with a unique model_name
        page.goto(f"{airflow_url}/dags/{DAG}")
        page.get_by_role("heading", name=DAG).wait_for()
        shot("dag-page")
        page.get_by_role("button", name="Trigger Dag").click()
        form = page.get_by_role("dialog")
        field = form.locator('input[name="element_model_name"]')
        field.fill(name)
        shot("trigger-form")
        form.get_by_role("button", name="Trigger", exact=True).click()
        page.wait_for_url(re.compile(rf"/dags/{DAG}/runs/[^/]+$"))
        run_id = unquote(page.url.rsplit("/runs/", 1)[1])
        assert api.dag_run(DAG, run_id)["conf"]["model_name"] == name  # the form fed the Param
        shot("run-page")

        # 3. wait (REST) until the HITL task parks, then approve in the Required Actions view
        api.wait_task_state(DAG, run_id, "approve_in_airflow", {"awaiting_input"}, timeout=600)
        time.sleep(3)  # Airflow 3.3.2 can fail a HITL task answered within ~1 s of parking (see notes)
        page.get_by_role("button", name="Browse").click()
        page.get_by_role("menuitem", name="Required Actions").click()
        page.wait_for_url(re.compile(r"/required_actions"))
        subject = page.get_by_role("link", name=f"Approve model {name} version 1?")
        subject.wait_for()
        shot("required-actions-list")
        subject.click()
        page.wait_for_url(re.compile(r"/tasks/approve_in_airflow/required_actions"))
        approve = page.get_by_role("button", name="Approve", exact=True)
        approve.wait_for()
        shot("required-action-form")
        approve.click()
        run = api.wait_run(DAG, run_id, timeout=600)
        assert run["state"] == "success", api.task_instances(DAG, run_id)
        page.reload()
        page.get_by_text("Response received").wait_for()
        assert page.get_by_text(re.compile(r"Response received at .* from bob")).count() == 1
        shot("approved-in-airflow")

        # 4. MLflow's page for the new version shows the approval and lineage tags
        mv = build_client(MlflowSettings(mlflow_url)).get_model_version(name, "1")
        assert mv.tags[T.APPROVAL_STATUS] == T.APPROVED and mv.tags[T.APPROVAL_BY] == "bob"
        page.goto(f"{mlflow_url}/#/models/{name}/versions/1")
        page.get_by_role("heading", name="Version 1").wait_for()
        assert page.get_by_text("@ champion").count() >= 1 or "champion" in page.locator("body").inner_text()
        assert "Approved" in _tag_row(page, T.APPROVAL_STATUS)
        shot("mlflow-version-approval")
        assert "bob" in _tag_row(page, T.APPROVAL_BY)
        assert "airflow" in _tag_row(page, T.APPROVAL_VIA)
        assert mv.tags[T.DATASET_DIGEST] in _tag_row(page, T.DATASET_DIGEST)
        assert "sklearn:breast_cancer" in _tag_row(page, T.DATASET_SOURCE)
        shot("mlflow-version-lineage")
        assert run_id in _tag_row(page, T.AIRFLOW_RUN_ID).replace("\n", "")
        shot("mlflow-version-airflow-run")
        # 5. the version's description is saga's summary, rendered by MLflow as Markdown
        body = page.locator("body").inner_text()
        assert "approval status Approved by bob" in body and "holds @champion" in body, body[:2000]
        assert page.get_by_role("heading", name="Approvals").count() == 1
        assert page.get_by_role("link", name=f"Airflow run {DAG}").count() >= 1  # substring match
        shot("mlflow-version-description")
    except BaseException:
        with_context = SHOTS / "failure.png"
        page.screenshot(path=str(with_context))
        (SHOTS / "failure.html").write_text(page.content())
        raise
    finally:
        context.close()


def _login(page: Page, airflow_url: str, user: str) -> None:
    page.goto(f"{airflow_url}/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(user)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


def _expected_holdings(history: list[dict]) -> list[tuple[str, str]]:
    """(alias, version) of every holding, lane by lane, straight from the history entries."""
    lanes: dict[str, list[str]] = {}
    for h in history:
        lanes.setdefault(h["alias"], [])
        if h["to"] is not None:
            lanes[h["alias"]].append(str(h["to"]))
    return [(alias, v) for alias in lanes for v in lanes[alias]]


def test_models_view_from_airflow_navigation_matches_the_registry(e2e_stack, e2e_story, browser):
    from airflow_saga.core import approval, promotion

    airflow_url, mlflow_url = e2e_stack["airflow"].url, e2e_stack["mlflow"].url
    name, client = e2e_story["name"], e2e_story["client"]
    history = promotion.history(client, name)
    current = promotion.aliases(client, name)
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda m: -int(m.version))

    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(30_000)
    shot = Shots(page, SHOTS / "models-view")
    try:
        # 1. a read-only viewer signs in and opens "Models" from Airflow's navigation
        _login(page, airflow_url, "vera")
        nav = page.get_by_role("link", name="Models")
        if not nav.count():
            page.get_by_role("button", name="Plugins").click()
            nav = page.get_by_role("menuitem", name="Models")
        nav.first.click()
        page.wait_for_url(re.compile(r"/plugin/saga-models"))
        frame = page.frame_locator('iframe[title="Models"]')
        frame.locator("h1", has_text="Models").wait_for()
        shot("models-list")
        frame.get_by_role("link", name=name, exact=True).click()
        frame.locator("#model-name", has_text=name).wait_for()
        shot("model-page")
        frame.locator("#history").scroll_into_view_if_needed()
        shot("model-page-history")

        # 2. the versions table is the registry: status, who decided, aliases
        rows = frame.locator("#versions tbody tr")
        assert rows.count() == len(versions)
        for i, mv in enumerate(versions):
            row = rows.nth(i)
            assert row.get_attribute("data-version") == str(mv.version)
            assert row.locator("td.status").inner_text().strip() == approval.get_status(mv)
            assert row.locator("td.by").inner_text().split()[0] == mv.tags[T.APPROVAL_BY]
            want = sorted(a for a, v in current.items() if v == str(mv.version))
            got = [b.get_attribute("data-alias") for b in row.locator("td.aliases [data-alias]").all()]
            assert got == want

        # 3. the timeline's holdings and markers are the history's; the current holders are the registry's
        holdings = frame.locator("svg.timeline g.holding")
        got = [(g.get_attribute("data-alias"), g.get_attribute("data-version")) for g in holdings.all()]
        assert got == _expected_holdings(history)
        assert frame.locator("svg.timeline g.event").count() == len(history)
        badges = frame.locator("[data-current-alias]")
        shown = {b.get_attribute("data-current-alias"): b.get_attribute("data-version") for b in badges.all()}
        assert shown == current
        assert frame.locator(".unrecorded").count() == 0

        # 4. the history table, newest first, entry by entry
        hrows = frame.locator("#history tbody tr")
        seqs = [int(r.get_attribute("data-seq")) for r in hrows.all()]
        assert seqs == [h["seq"] for h in reversed(history)]
        for r, h in zip(hrows.all(), reversed(history), strict=True):
            assert r.locator("td.action").inner_text() == h["action"]
            assert r.locator("td.to").inner_text() == (f"v{h['to']}" if h["to"] else "\u2013")
            assert r.locator("td.reason").inner_text() == h["reason"]

        # 5. the shadow-tested, rolled-back version: evaluation vs champion, gate, shadow and drift plots
        v2 = e2e_story["versions"]["v2"]
        frame.get_by_role("link", name=f"v{v2}", exact=True).click()
        frame.locator("#version-title").wait_for()
        assert frame.locator("#shadow tbody tr").count() == 2
        assert frame.locator("#drift tbody tr").count() == 2
        assert frame.locator("#evaluation tbody tr[data-metric='accuracy']").count() == 1
        assert frame.locator("#gate-checks tbody tr").count() >= 1
        for title in ("Agreement with the champion", "Latency per request", "Drift score per feature"):
            assert frame.locator(f"svg[aria-label^='{title}']").count() == 1
        shot("version-page")
        frame.locator("#shadow").scroll_into_view_if_needed()
        shot("version-page-shadow")
        frame.locator("#drift").scroll_into_view_if_needed()
        shot("version-page-drift")

        # 6. links leave the sandboxed iframe: MLflow opens in a new tab
        with context.expect_page() as opened:
            frame.get_by_role("link", name="MLflow version").first.click()
        mlflow_page = opened.value
        mlflow_page.wait_for_load_state()
        assert mlflow_page.url.startswith(f"{mlflow_url}/#/models/{name}/versions/{v2}")
        mlflow_page.close()
    except BaseException:
        page.screenshot(path=str(SHOTS / "models-view-failure.png"), full_page=True)
        (SHOTS / "models-view-failure.html").write_text(page.content())
        raise
    finally:
        context.close()
