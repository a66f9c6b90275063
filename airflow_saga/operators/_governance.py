"""Helpers shared by the governance operators (promote, rollback, approval): identity and links."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context


def actor(context: Context) -> str:
    """Who acts, for the audit trail: the user who triggered the DAG run, else the DAG run itself."""
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None) if dag_run is not None else None
    ti = context["ti"]
    where = f"airflow:{ti.dag_id}/{ti.run_id}"
    return f"{user} ({where})" if user else where


def link_version(operator: Any, context: Context, name: str, version: str | None) -> None:
    """Point the task's "MLflow Model Version" extra link at ``version`` (no-op when unknown)."""
    if not version:
        return
    from airflow_saga.links import mlflow_model_version_url, set_mlflow_links

    set_mlflow_links(
        operator,
        context,
        model_version_url=mlflow_model_version_url(operator.hook.settings.browser_url, name, version),
    )
