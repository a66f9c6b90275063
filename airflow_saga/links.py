"""Extra links from Airflow task pages to MLflow run and model-version pages.

Contract for any operator (saga's own, or the lead's train/register operators): during ``execute`` call
``set_mlflow_links(self, context, run_url=..., model_version_url=...)``. It stores the URLs on the operator
as ``self._saga_link = {"run_url": ..., "model_version_url": ...}`` and, given a context, also pushes them
to XCom under ``saga_mlflow_run_url`` / ``saga_mlflow_model_version_url`` for downstream tasks. In Airflow 3
the worker calls ``get_link`` right after ``execute`` (or ``execute_complete`` after a deferral, so set the
links there too) and persists the result in XCom ``_link_<ClassName>``; the API server only reads that XCom.
``get_link`` reads only the attribute: no extra API call, no "XCom not found" noise on failed tasks. A link
with no URL is an empty string, which the UI shows as no link.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

LINK_ATTR = "_saga_link"
XCOM_KEYS = {"run_url": "saga_mlflow_run_url", "model_version_url": "saga_mlflow_model_version_url"}


def mlflow_run_url(ui_base: str | None, experiment_id: str, run_id: str) -> str | None:
    if not ui_base:
        return None
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_model_version_url(ui_base: str | None, name: str, version: str | int) -> str | None:
    if not ui_base:
        return None
    return f"{ui_base.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"


def set_mlflow_links(
    operator: BaseOperator,
    context: Context | None = None,
    *,
    run_url: str | None = None,
    model_version_url: str | None = None,
) -> None:
    """Record the MLflow pages this task produced or acted on (see module docstring)."""
    links: dict[str, Any] = dict(getattr(operator, LINK_ATTR, None) or {})
    for field, url in (("run_url", run_url), ("model_version_url", model_version_url)):
        if url:
            links[field] = url
            if context is not None:
                context["ti"].xcom_push(key=XCOM_KEYS[field], value=url)
    setattr(operator, LINK_ATTR, links)


class _SagaMlflowLink(BaseOperatorLink):
    field = ""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return (getattr(operator, LINK_ATTR, None) or {}).get(self.field) or ""


class MlflowRunLink(_SagaMlflowLink):
    """Link to the MLflow run a task created or used."""

    name = "MLflow Run"
    field = "run_url"


class MlflowModelVersionLink(_SagaMlflowLink):
    """Link to the registered model version a task registered, approved, promoted or rolled back."""

    name = "MLflow Model Version"
    field = "model_version_url"
