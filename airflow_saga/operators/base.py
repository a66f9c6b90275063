"""Shared plumbing for saga operators: the MLflow hook and the Airflow facts recorded as lineage."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_saga.hooks.mlflow import MlflowHook


def airflow_base_url() -> str:
    from airflow.sdk import conf

    return (conf.get("api", "base_url", fallback="") or "http://localhost:8080").rstrip("/")


def dag_run_url(dag_id: str, run_id: str) -> str:
    return f"{airflow_base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def file_sha256(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def airflow_facts(context: Context) -> dict[str, str]:
    """What lineage records about the Airflow side of a task: DAG, run, task, try, URL and DAG file hash."""
    ti = context["ti"]
    dag = context.get("dag")
    facts = {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "try_number": str(ti.try_number),
        "map_index": str(getattr(ti, "map_index", -1)),
        "run_url": dag_run_url(ti.dag_id, ti.run_id),
    }
    dag_run = context.get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None) if dag_run is not None else None
    if user:  # None for scheduled and asset-triggered runs; four-eyes compares approvers against it
        facts["triggered_by"] = str(user)
    fileloc = getattr(dag, "fileloc", None) if dag is not None else None
    digest = file_sha256(fileloc)
    if digest:
        facts["dag_file_hash"] = digest
    return facts


class SagaBaseOperator(BaseOperator):
    """Base for operators that talk to MLflow through an ``mlflow`` connection.

    :param mlflow_conn_id: the Airflow connection of type ``mlflow``.
    :param governance_policy: the governance policy (``core.policy`` JSON as a dict or text, or a policy
        object) for the approvals and alias moves this task makes; put it in the DAG's ``default_args`` to
        cover every task. None: the ``saga_governance_policy`` Variable, else core's default.
    """

    def __init__(
        self, *, mlflow_conn_id: str = "mlflow_default", governance_policy: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.governance_policy = governance_policy

    def saga_policy(self, model_name: str) -> Any:
        """The policy for ``model_name`` (see ``airflow_saga.policies.policy_for``); None: core's default."""
        from airflow_saga.policies import policy_for

        return policy_for(str(model_name), self.governance_policy)

    @cached_property
    def hook(self) -> MlflowHook:
        from airflow_saga.hooks.mlflow import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def on_kill(self) -> None:
        """Airflow is terminating the task: end the MLflow runs it has open as KILLED."""
        from airflow_saga.core.runs import end_active

        end_active("KILLED")
        super().on_kill()
