"""ModelApprovalTrigger: waits in the triggerer for a version to be Approved or Rejected in MLflow.

MLflow's client is synchronous, so every poll runs in ``asyncio.to_thread``: the triggerer's event loop
serves many triggers and must never block on HTTP. The trigger owns the deadline (``timeout_at``, epoch
seconds) and reports ``timeout`` itself, so the sensor can fail with a message that names the model and
version; this also works under ``dag.test()``, which runs triggers inline.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


def check_once(
    mlflow_conn_id: str, model_name: str, version: str, governance_policy: Any = None
) -> dict[str, Any]:
    """One synchronous poll: record a hand-made MLflow decision if any, and report the decision.

    The decision is judged by the model's governance policy (``governance_policy``, else the Variable):
    one that breaks it is recorded as a violation, the status is put back, and the wait goes on.
    """
    from airflow_saga.core import approval
    from airflow_saga.core.errors import PolicyError, RegistryError
    from airflow_saga.hooks.mlflow import MlflowHook
    from airflow_saga.policies import policy_for

    try:
        policy = policy_for(model_name, governance_policy)
    except PolicyError as exc:
        return {"status": "error", "message": str(exc)}
    try:
        client = MlflowHook(mlflow_conn_id=mlflow_conn_id).get_conn()
        mv = approval.observe(client, model_name, version, policy=policy)
        decided = approval.decision(mv)
        entry = approval.last_entry(mv) if decided else None
    except RegistryError as exc:
        return {"status": "error", "message": str(exc)}
    if decided is None:
        return {"status": "pending"}
    return {"status": decided, "entry": entry}


class ModelApprovalTrigger(BaseTrigger):
    """Fire once ``model_name`` version ``version`` is decided, errors, or ``timeout_at`` passes."""

    def __init__(
        self,
        model_name: str,
        version: str,
        mlflow_conn_id: str = "mlflow_default",
        poll_interval: float = 30.0,
        timeout_at: float | None = None,
        governance_policy: dict[str, Any] | str | None = None,
    ) -> None:
        super().__init__()
        self.governance_policy = governance_policy
        self.model_name = model_name
        self.version = str(version)
        self.mlflow_conn_id = mlflow_conn_id
        self.poll_interval = float(poll_interval)
        self.timeout_at = timeout_at

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "airflow_saga.triggers.approval.ModelApprovalTrigger",
            {
                "model_name": self.model_name,
                "version": self.version,
                "mlflow_conn_id": self.mlflow_conn_id,
                "poll_interval": self.poll_interval,
                "timeout_at": self.timeout_at,
                "governance_policy": self.governance_policy,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        base = {"model_name": self.model_name, "version": self.version}
        while True:
            try:
                result = await asyncio.to_thread(
                    check_once, self.mlflow_conn_id, self.model_name, self.version, self.governance_policy
                )
            except Exception as exc:  # MLflow down: keep waiting until the deadline, say why in the log
                self.log.warning("Polling MLflow for %s v%s failed: %s", self.model_name, self.version, exc)
                result = {"status": "pending"}
            if result["status"] != "pending":
                yield TriggerEvent({**base, **result})
                return
            if self.timeout_at is not None and time.time() >= self.timeout_at:
                yield TriggerEvent({**base, "status": "timeout"})
                return
            self.log.info("Model %s version %s still pending approval", self.model_name, self.version)
            delay = self.poll_interval
            if self.timeout_at is not None:
                delay = max(0.0, min(delay, self.timeout_at - time.time()))
            await asyncio.sleep(delay)
