"""PromoteModelOperator: move @champion / @challenger to a version, with the history entry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_saga.links import MlflowModelVersionLink
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators.base import SagaBaseOperator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class PromoteModelOperator(OpenLineageMixin, SagaBaseOperator):
    """Point ``alias`` at ``version`` of ``model_name`` (only Approved versions may become champion).

    :param version: templated; e.g. ``"{{ ti.xcom_pull(task_ids='register')['version'] }}"``.
    :param alias: ``champion``, ``challenger``, or ``auto`` = challenger, or champion when the model has no
        champion yet (what the training pipeline uses after approval).
    :param reason: recorded in the promotion history.

    A refused promotion (not Approved, unknown version, a policy) fails the task without retry: retrying
    cannot change the answer. A busy lock (another change of the model held it too long) is retried.
    Returns the promotion result (alias, version, previous holder, history entries).
    """

    template_fields: Sequence[str] = ("model_name", "version", "alias", "reason", "mlflow_conn_id")
    operator_extra_links = (MlflowModelVersionLink(),)
    ui_color = "#d7f0d2"

    def __init__(
        self,
        *,
        model_name: str,
        version: str | int,
        alias: str = "auto",
        reason: str = "",
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(mlflow_conn_id=mlflow_conn_id, **kwargs)
        self.model_name = model_name
        self.version = version
        self.alias = alias
        self.reason = reason

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core import promotion
        from airflow_saga.operators._governance import actor, link_version
        from airflow_saga.operators._util import saga_errors

        version = str(self.version).strip()
        if not version or version == "None":
            raise AirflowFailException(
                f"PromoteModelOperator: no version given for model {self.model_name!r}"
            )
        link_version(self, context, self.model_name, version)
        reason = self.reason or f"promoted by Airflow task {context['ti'].task_id}"
        with saga_errors():
            res = promotion.promote(
                self.hook.client,
                self.model_name,
                version,
                self.alias,
                by=actor(context),
                reason=reason,
                via="airflow",
                policy=self.saga_policy(self.model_name),
            )
        if res.changed:
            self.log.info(
                "Model %r: @%s %s -> %s (%s)", res.model, res.alias, res.previous, res.version, reason
            )
        else:
            self.log.info(
                "Model %r version %s already holds @%s; nothing changed", res.model, res.version, res.alias
            )
        return res.as_dict()

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: the version in; the alias it now serves out (the deployment)."""
        from airflow_saga.openlineage import alias_promotion_io

        return alias_promotion_io(self.saga_namespace(), str(self.model_name), result)
