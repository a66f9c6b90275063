"""Helpers that create real registry state on a real MLflow server for governance tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_saga.core import tags as T
from airflow_saga.core.registry import register_version

if TYPE_CHECKING:
    from mlflow import MlflowClient


def make_version(
    client: MlflowClient,
    name: str,
    *,
    status: str = T.PENDING,
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
) -> str:
    """Register a new version of ``name`` from a fresh (empty) training run; return its version string."""
    run = client.create_run("0", tags={T.RUN_KIND: "train"})
    run_id = run.info.run_id
    for k, v in (params or {}).items():
        client.log_param(run_id, k, v)
    for k, v in (metrics or {}).items():
        client.log_metric(run_id, k, v)
    client.set_terminated(run_id)
    mv, _ = register_version(
        client,
        name,
        model_uri=f"runs:/{run_id}/model",
        run_id=run_id,
        tags=tags or {},
        approval_status=status,
    )
    return str(mv.version)


def registry_state(client: MlflowClient, name: str) -> tuple:
    """Everything a refused governance operation must leave untouched: aliases, model and version tags,
    and the history runs (id, status, tags) in the model's history experiment, deleted ones included."""
    from mlflow.entities import ViewType

    model = client.get_registered_model(name)
    versions = client.search_model_versions(f"name='{name}'")
    exp = client.get_experiment_by_name(f"{T.HISTORY_EXPERIMENT_PREFIX}{name}")
    runs = (
        []
        if exp is None
        else client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=50_000)
    )
    return (
        dict(model.aliases),
        dict(model.tags),
        {str(mv.version): dict(mv.tags) for mv in versions},
        sorted(
            (r.info.run_id, r.info.status, r.info.lifecycle_stage, tuple(sorted(r.data.tags.items())))
            for r in runs
        ),
    )
