"""Approval status of a model version: a small state machine over MLflow version tags.

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
unanswerable. To try again, re-run the pipeline, which registers a new Pending version. Setting the status
a version already has is an idempotent no-op (a retried task must not fail or duplicate the log).

A decision made by hand in the MLflow UI changes only the status tag. ``observe`` notices that the status
differs from the last logged transition and records it with ``via="mlflow"``, once, the first time saga
reads the version. A status outside the three values raises ``ApprovalError`` naming model, version, value.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags as T
from airflow_saga.core.errors import ApprovalError
from airflow_saga.core.registry import get_version, utcnow_iso

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from airflow_saga.core.locking import ModelLock

log = logging.getLogger(__name__)

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


def _label(mv: ModelVersion) -> str:
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
            f"{_label(mv)} has invalid {T.APPROVAL_STATUS}={value!r} (set by hand?); "
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
        raise ApprovalError(f"{_label(mv)} has an unreadable {T.APPROVAL_LOG} tag: {exc}") from exc
    if not isinstance(entries, list):
        raise ApprovalError(f"{_label(mv)} has a {T.APPROVAL_LOG} tag that is not a JSON list")
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
            f"{_label(mv)}: status was changed by hand in MLflow from {previous} to {status}, "
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


def _write(client: MlflowClient, mv: ModelVersion, entry: dict[str, Any], lock: ModelLock | None) -> None:
    entries = [*approval_log(mv), entry]
    if lock is not None:
        lock.check()
    name, version = mv.name, str(mv.version)
    # The log goes first: if we crash half-way, the status tag is still the old one and a retry redoes it.
    client.set_model_version_tag(name, version, T.APPROVAL_LOG, json.dumps(entries))
    for key, field in (
        (T.APPROVAL_BY, "by"),
        (T.APPROVAL_AT, "at"),
        (T.APPROVAL_COMMENT, "comment"),
        (T.APPROVAL_VIA, "via"),
        (T.APPROVAL_STATUS, "status"),
    ):
        client.set_model_version_tag(name, version, key, str(entry[field]))


def observe(
    client: MlflowClient, name: str, version: str | int, *, lock: ModelLock | None = None
) -> ModelVersion:
    """Read a version and record a decision made by hand in MLflow, if any; return the fresh version.

    Recording takes the model lock (unless the caller already holds it) so a concurrent ``set_status`` and
    a sensor noticing the same UI decision cannot both append to the log.
    """
    mv = get_version(client, name, version)
    if unrecorded_decision(mv) is None:
        return mv
    if lock is not None:
        return _observe_locked(client, name, version, lock)
    from airflow_saga.core.locking import ModelLock

    with ModelLock(client, name, purpose=f"observe approval of version {version}") as held:
        return _observe_locked(client, name, version, held)


def _observe_locked(client: MlflowClient, name: str, version: str | int, lock: ModelLock) -> ModelVersion:
    mv = get_version(client, name, version)
    entry = unrecorded_decision(mv)
    if entry is None:
        return mv
    log.info("Recording decision made in MLflow for %s: %s by %s", _label(mv), entry["status"], entry["by"])
    entry.pop("from", None)
    _write(client, mv, entry, lock)
    return get_version(client, name, version)


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


def set_status(
    client: MlflowClient,
    name: str,
    version: str | int,
    status: str,
    *,
    by: str,
    comment: str = "",
    via: str = "api",
    lock: ModelLock | None = None,
) -> ModelVersion:
    """Move a version to ``status``, recording who, when, why and how; return the updated version.

    Refuses invalid transitions with ``ApprovalError`` and changes nothing. Rejecting the current champion
    is refused too (roll back or promote another version first): champion must never point at a version
    that is not Approved. Rejecting the challenger removes that alias and records a ``demote`` in the
    promotion history.
    """
    if status not in T.APPROVAL_STATUSES:
        raise ApprovalError(
            f"Unknown approval status {status!r}; use one of {', '.join(T.APPROVAL_STATUSES)}"
        )
    if via not in VIAS:
        raise ApprovalError(f"Unknown approval path via={via!r}; use one of {', '.join(VIAS)}")
    if not by:
        raise ApprovalError("An approval decision needs the identity of who made it (by=...)")
    if lock is not None:
        return _set_status_locked(client, name, version, status, by, comment, via, lock)
    from airflow_saga.core.locking import ModelLock

    get_version(client, name, version)  # unknown model/version: fail before taking the lock
    with ModelLock(client, name, purpose=f"set version {version} {status}") as held:
        return _set_status_locked(client, name, version, status, by, comment, via, held)


def _set_status_locked(
    client: MlflowClient,
    name: str,
    version: str | int,
    status: str,
    by: str,
    comment: str,
    via: str,
    lock: ModelLock,
) -> ModelVersion:
    from airflow_saga.core import promotion

    mv = _observe_locked(client, name, version, lock)
    current = get_status(mv)
    if current == status:
        log.info("%s is already %s; nothing to do", _label(mv), status)
        return mv
    if status not in TRANSITIONS[current]:
        hint = (
            " (Rejected is final: re-run the pipeline to register a new version)"
            if current == T.REJECTED
            else ""
        )
        raise ApprovalError(f"{_label(mv)} cannot go from {current} to {status}{hint}")
    aliases = promotion.aliases_of(client, name, str(mv.version))
    if status == T.REJECTED and T.CHAMPION in aliases:
        raise ApprovalError(
            f"{_label(mv)} is the current champion and cannot be rejected; roll back or promote another "
            f"Approved version first (saga rollback {name} --reason ...)"
        )
    entry = {
        "status": status,
        "by": by,
        "at": utcnow_iso(),
        "via": via,
        "comment": (comment or "")[:MAX_COMMENT],
    }
    _write(client, mv, entry, lock)
    if status == T.REJECTED and T.CHALLENGER in aliases:
        promotion.remove_alias_locked(
            client, name, T.CHALLENGER, by=by, reason=f"version {mv.version} rejected: {comment}", lock=lock
        )
    return get_version(client, name, version)
