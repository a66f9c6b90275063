"""The approval state machine of a model version, over MLflow version tags: pure reads, no writes.

Why tags: MLflow has no approval workflow, but version tags are visible and editable in the MLflow UI, so a
reviewer can decide there as well as in Airflow. The current status lives in ``saga.approval.status`` with
the latest transition's who/when/comment/path in ``saga.approval.by|at|comment|via``; every transition is
appended to the JSON list ``saga.approval.log`` (oldest first), so the audit trail survives later changes.

Allowed transitions::

    PendingManualApproval -> Approved | Rejected
    Approved              -> Rejected            (revoke)
    Rejected              -> (terminal)

Rejected is terminal on purpose: a rejection fails the pipeline run and drops the challenger alias, and a
rejected artifact that could quietly become Approved again would make "who let this into production"
unanswerable. To try again, re-run the pipeline, which registers a new Pending version.

This module only reads and decides; every write goes through ``core.governance`` (one unit of work that
holds the model's lock), which is why it imports nothing else of the package's governance code.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags as T
from airflow_saga.core.errors import ApprovalError
from airflow_saga.core.registry import utcnow_iso

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

VIAS = ("airflow", "mlflow", "api")
MLFLOW_UI_USER = "mlflow-ui"
MAX_COMMENT = 1000

TRANSITIONS: dict[str, frozenset[str]] = {
    T.PENDING: frozenset({T.APPROVED, T.REJECTED}),
    T.APPROVED: frozenset({T.REJECTED}),
    T.REJECTED: frozenset(),
}


def _tags(mv: ModelVersion) -> dict[str, str]:
    return dict(mv.tags or {})


def version_label(mv: ModelVersion) -> str:
    return f"model {mv.name!r} version {mv.version}"


def get_status(mv: ModelVersion) -> str:
    """The validated approval status of ``mv``.

    A version registered outside saga (no status tag) counts as PendingManualApproval: it has not been
    approved by anyone, which is the safe reading for the champion rule.
    """
    value = _tags(mv).get(T.APPROVAL_STATUS)
    if value is None:
        return T.PENDING
    if value not in T.APPROVAL_STATUSES:
        raise ApprovalError(
            f"{version_label(mv)} has invalid {T.APPROVAL_STATUS}={value!r} (set by hand?); "
            f"allowed values are {', '.join(T.APPROVAL_STATUSES)}"
        )
    return value


def approval_log(mv: ModelVersion) -> list[dict[str, Any]]:
    """Every recorded transition, oldest first (empty for versions registered outside saga)."""
    raw = _tags(mv).get(T.APPROVAL_LOG)
    if not raw:
        return []
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise ApprovalError(f"{version_label(mv)} has an unreadable {T.APPROVAL_LOG} tag: {exc}") from exc
    if not isinstance(entries, list):
        raise ApprovalError(f"{version_label(mv)} has a {T.APPROVAL_LOG} tag that is not a JSON list")
    return entries


def _logged_status(mv: ModelVersion) -> str | None:
    entries = approval_log(mv)
    return entries[-1].get("status") if entries else None


def unrecorded_decision(mv: ModelVersion) -> dict[str, Any] | None:
    """The log entry a hand-made MLflow decision should get, or None when the log is up to date.

    The reviewer may also have set ``saga.approval.by``/``comment``; if those still equal the last logged
    entry they are stale leftovers of that entry and we attribute the change to ``mlflow-ui``.
    """
    status = get_status(mv)
    entries = approval_log(mv)
    last = entries[-1] if entries else None
    if last is not None and last.get("status") == status:
        return None
    if last is None and status == T.PENDING:
        return None  # registered outside saga, never decided: nothing to record
    tags = _tags(mv)
    by = tags.get(T.APPROVAL_BY)
    comment = tags.get(T.APPROVAL_COMMENT)
    if last is not None and by == last.get("by") and tags.get(T.APPROVAL_AT) == last.get("at"):
        by = None
        if comment == last.get("comment"):
            comment = None
    previous = last.get("status") if last else None
    if previous is not None and status not in TRANSITIONS.get(previous, frozenset()):
        raise ApprovalError(
            f"{version_label(mv)}: status was changed by hand in MLflow from {previous} to {status}, "
            f"which saga does not allow (allowed from {previous}: "
            f"{sorted(TRANSITIONS.get(previous, ())) or 'none'})"
        )
    return {
        "status": status,
        "from": previous,
        "by": by or MLFLOW_UI_USER,
        "at": utcnow_iso(),
        "via": "mlflow",
        "comment": (comment or "set in MLflow")[:MAX_COMMENT],
    }


def decision(mv: ModelVersion) -> str | None:
    """Pure check used by the sensor and trigger: None while pending, else Approved or Rejected."""
    status = get_status(mv)
    return None if status == T.PENDING else status


def last_entry(mv: ModelVersion) -> dict[str, Any]:
    """The latest transition (from the log, or from the loose tags of a hand-made decision)."""
    pending = unrecorded_decision(mv)
    if pending is not None:
        return pending
    entries = approval_log(mv)
    return entries[-1] if entries else {"status": get_status(mv)}
