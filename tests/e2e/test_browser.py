"""A person's path through the two UIs, in a real browser: Playwright driving Debian's Chromium, headless.

Why: the REST tests prove the API; this proves what a reviewer actually clicks works — the Airflow trigger
form feeds the DAG's Params, the Human-in-the-loop "Required Actions" view approves the version, and MLflow's
model-version page shows the approval and lineage tags airflow-saga wrote. Screenshots of every step land in
``test-artifacts/browser/`` (git-ignored; CI keeps them as artifacts).

Chromium comes from Debian (``scripts/install-browser.sh``, run by ``scripts/test.sh``): Playwright's own
browser download cannot reach its CDN from the project's machines.

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

    def __init__(self, page: Page) -> None:
        self.page, self.n = page, 0
        SHOTS.mkdir(parents=True, exist_ok=True)
        for old in SHOTS.glob("*.png"):
            old.unlink()

    def __call__(self, name: str) -> Path:
        self.n += 1
        path = SHOTS / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path))
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
    except BaseException:
        with_context = SHOTS / "failure.png"
        page.screenshot(path=str(with_context))
        (SHOTS / "failure.html").write_text(page.content())
        raise
    finally:
        context.close()
