"""ModelApprovalSensor: wait until a model version is Approved or Rejected in MLflow.

For decisions made outside Airflow (the MLflow UI or API): a reviewer sets ``saga.approval.status``; the
sensor notices, records the decision in the approval log (via="mlflow") and succeeds on Approved, returning
the decision, or fails without retry on Rejected with the reviewer's reason. Poke/reschedule mode polls from
the worker; deferrable mode pokes once, then hands the wait to ``ModelApprovalTrigger`` in the triggerer.
Airflow 3.3.2 can mis-mark a task whose trigger fires within seconds of deferring (apache/airflow#71580),
so give deferrable sensors ``retries >= 1``: the retry finds the decision at its first poke.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, conf
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferralTimeout

from airflow_saga.links import MlflowModelVersionLink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class ModelApprovalSensor(BaseSensorOperator):
    """Wait for ``model_name`` version ``version`` (templated) to be decided.

    :param deferrable: default from ``[operators] default_deferrable``.
    :param poke_interval: seconds between polls (also the trigger's poll interval).
    :param timeout: how long to wait for a decision before failing with a clear message.
    :param governance_policy: the policy that judges the decision (``core.policy`` JSON, dict or text; in
        deferrable mode it travels to the triggerer, so no policy objects); None: the Variable
        ``saga_governance_policy``. A status set by hand that breaks it is recorded as a violation and put
        back, and the sensor keeps waiting.
    """

    template_fields: Sequence[str] = ("model_name", "version")
    operator_extra_links = (MlflowModelVersionLink(),)
    ui_color = "#fdf2c8"

    def __init__(
        self,
        *,
        model_name: str,
        version: str | int,
        mlflow_conn_id: str = "mlflow_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        governance_policy: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if governance_policy is not None and not isinstance(governance_policy, dict | str):
            raise TypeError(
                "ModelApprovalSensor governance_policy must be the JSON form (a dict or text), got "
                f"{type(governance_policy).__name__}: it is sent to the triggerer"
            )
        self.governance_policy = governance_policy
        self.model_name = model_name
        self.version = version
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = deferrable

    # -- shared -----------------------------------------------------------------------------------------
    def _link(self, context: Context) -> None:
        from airflow_saga.hooks.mlflow import MlflowHook
        from airflow_saga.links import mlflow_model_version_url, set_mlflow_links

        settings = MlflowHook(mlflow_conn_id=self.mlflow_conn_id).settings
        set_mlflow_links(
            self,
            context,
            model_version_url=mlflow_model_version_url(settings.browser_url, self.model_name, self.version),
        )

    def _timeout_message(self) -> str:
        return (
            f"No approval decision for model {self.model_name!r} version {self.version} within "
            f"{timedelta(seconds=self.timeout)}; it is still PendingManualApproval. Approve or reject it "
            f"(saga approve {self.model_name} {self.version} --comment ..., "
            f"or set tag saga.approval.status in "
            f"MLflow) and re-run this task"
        )

    def _finish(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """None while pending; the decision on Approved; raise on Rejected, error or timeout."""
        status = result["status"]
        if status == "pending":
            return None
        if status == "timeout":
            raise AirflowSensorTimeout(self._timeout_message())
        if status == "error":
            raise AirflowFailException(result["message"])
        entry = result.get("entry") or {}
        if status == "Rejected":
            raise AirflowFailException(
                f"Model {self.model_name!r} version {self.version} was rejected by {entry.get('by', '?')} "
                f"via {entry.get('via', '?')}: {entry.get('comment') or '(no reason given)'}"
            )
        self.log.info(
            "Model %r version %s approved by %s via %s",
            self.model_name,
            self.version,
            entry.get("by"),
            entry.get("via"),
        )
        return {"model": self.model_name, "version": str(self.version), "status": status, **entry}

    # -- poke mode --------------------------------------------------------------------------------------
    def poke(self, context: Context) -> PokeReturnValue | bool:
        from airflow_saga.triggers.approval import check_once

        done = self._finish(
            check_once(self.mlflow_conn_id, self.model_name, str(self.version), self.governance_policy)
        )
        if done is None:
            self.log.info("Model %r version %s: still pending", self.model_name, self.version)
            return False
        return PokeReturnValue(is_done=True, xcom_value=done)

    def execute(self, context: Context) -> Any:
        self._link(context)
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as exc:
                if self.model_name in str(exc):
                    raise
                raise AirflowSensorTimeout(self._timeout_message()) from exc
        # Poke once first: a version decided already needs no trigger (and dodges the 3.3.2 race).
        first = self.poke(context)
        if first:
            return first.xcom_value if isinstance(first, PokeReturnValue) else None
        from airflow_saga.triggers.approval import ModelApprovalTrigger

        self.defer(
            trigger=ModelApprovalTrigger(
                model_name=self.model_name,
                version=str(self.version),
                mlflow_conn_id=self.mlflow_conn_id,
                poll_interval=self.poke_interval,
                timeout_at=time.time() + self.timeout,
                governance_policy=self.governance_policy,
            ),
            method_name="execute_complete",
            # Backstop only: the trigger reports its own timeout with a clearer message.
            timeout=timedelta(seconds=self.timeout + max(60.0, self.poke_interval * 2)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        if not event:
            raise AirflowFailException(
                f"Approval trigger for {self.model_name!r} v{self.version} sent no event"
            )
        self._link(context)
        done = self._finish(event)
        if done is None:  # pragma: no cover - the trigger never fires "pending"
            raise AirflowFailException(f"Unexpected pending event for {self.model_name!r} v{self.version}")
        return done

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (AirflowSensorTimeout, TaskDeferralTimeout) as exc:
            if self.model_name in str(exc):
                raise
            raise AirflowSensorTimeout(self._timeout_message()) from exc
