"""RollbackModelOperator: put @champion back on the previous (or a given) Approved version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_saga.links import MlflowModelVersionLink
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators.base import SagaBaseOperator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class RollbackModelOperator(OpenLineageMixin, SagaBaseOperator):
    """Roll ``model_name``'s champion back; with no previous champion the task fails and nothing changes.

    :param target_version: templated; empty/None means "the previous champion from the history".
    :param reason: required; tagged on the rolled-back version and written to the history.
    """

    template_fields: Sequence[str] = ("model_name", "target_version", "reason", "mlflow_conn_id")
    operator_extra_links = (MlflowModelVersionLink(),)
    ui_color = "#f6d5d5"

    def __init__(
        self,
        *,
        model_name: str,
        target_version: str | int | None = None,
        reason: str,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(mlflow_conn_id=mlflow_conn_id, **kwargs)
        self.model_name = model_name
        self.target_version = target_version
        self.reason = reason

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core import promotion
        from airflow_saga.operators._governance import actor, link_version
        from airflow_saga.operators._util import saga_errors

        target = None if self.target_version in (None, "", "None") else str(self.target_version).strip()
        if not (self.reason or "").strip():
            raise AirflowFailException(f"Rollback of model {self.model_name!r} needs a reason")
        ti = context["ti"]
        # A retry of this task instance must not roll back a second time (one step further back).
        request = f"airflow:{ti.dag_id}/{ti.run_id}/{ti.task_id}/{getattr(ti, 'map_index', -1)}"
        with saga_errors():
            res = promotion.rollback(
                self.hook.client,
                self.model_name,
                target,
                by=actor(context),
                reason=self.reason,
                via="airflow",
                request_id=request,
                policy=self.saga_policy(self.model_name),
            )
        link_version(self, context, self.model_name, res.version)
        self.log.info(
            "Model %r: @champion rolled back %s -> %s (%s)", res.model, res.previous, res.version, self.reason
        )
        return res.as_dict()

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: the version rolled back to in; the champion alias out."""
        from airflow_saga.openlineage import alias_promotion_io

        return alias_promotion_io(self.saga_namespace(), str(self.model_name), result)
