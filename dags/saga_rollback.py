"""saga_rollback: one-click rollback of a model's @champion, triggered from the Airflow UI with params.

Trigger it with model_name, an optional target_version (empty = the previous champion from the promotion
history) and a reason. With no previous champion the run fails and nothing changes. Only ``run_id``-style
context is used, so a run triggered with no logical date works.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_saga.operators.rollback import RollbackModelOperator

with DAG(
    dag_id="saga_rollback",
    schedule=None,
    catchup=False,
    tags=["saga", "governance"],
    doc_md=__doc__,
    params={
        "model_name": Param(type="string", minLength=1, description="Registered model to roll back"),
        "target_version": Param(
            None,
            type=["null", "string", "integer"],
            description="Approved version to restore; empty = previous champion",
        ),
        "reason": Param(type="string", minLength=1, description="Why (tagged on the rolled-back version)"),
        "mlflow_conn_id": Param(
            "mlflow_default", type="string", description="Airflow connection of type mlflow"
        ),
    },
    render_template_as_native_obj=False,
) as dag:
    RollbackModelOperator(
        task_id="rollback",
        model_name="{{ params.model_name }}",
        target_version="{{ params.target_version if params.target_version is not none else '' }}",
        reason="{{ params.reason }} (run {{ run_id }})",
        mlflow_conn_id="{{ params.mlflow_conn_id }}",
    )
