"""One governance operation in its own process, with its own MLflow client (concurrency test)."""

from __future__ import annotations

from typing import Any


def run_op(tracking_uri: str, name: str, idx: int, op: tuple, start_event: Any) -> dict[str, Any]:
    """Run ``op`` as user ``w<idx>`` once ``start_event`` fires; report success and entries written."""
    from airflow_saga.core import approval, promotion
    from airflow_saga.core.errors import SagaError
    from airflow_saga.core.mlflow_client import MlflowSettings, build_client

    client = build_client(MlflowSettings(tracking_uri=tracking_uri))
    by = f"w{idx}"
    start_event.wait(300)
    kind, *args = op
    try:
        if kind == "promote":
            count = len(promotion.promote(client, name, args[0], args[1], by=by, reason="concurrent").entries)
        elif kind == "rollback":
            count = len(
                promotion.rollback(client, name, args[0], by=by, reason="concurrent rollback").entries
            )
        elif kind == "status":
            approval.set_status(client, name, args[0], args[1], by=by, comment="concurrent")
            count = None  # may demote the challenger; counted from the history by user id
        else:
            raise ValueError(kind)
    except SagaError as exc:
        return {"idx": idx, "op": op, "ok": False, "error": f"{type(exc).__name__}: {exc}", "count": 0}
    return {"idx": idx, "op": op, "ok": True, "error": None, "count": count}
