"""Approval of model versions: the public entry points (``set_status``, ``observe``) and state reads.

The state machine itself (statuses, allowed transitions, the approval log on version tags) is in
``core.approval_state``; every write goes through the governance unit of work (``core.governance``), which
holds the model's lock and owns the rules that tie approval to aliases ("cannot reject the champion",
"rejecting the challenger demotes it"). This module keeps the names callers have always used.

A decision made by hand in the MLflow UI changes only the status tag. ``observe`` notices that the status
differs from the last logged transition and records it with ``via="mlflow"``, once, the first time saga
reads the version. A status outside the three values raises ``ApprovalError`` naming model, version, value.
"""

from __future__ import annotations

from airflow_saga.core.approval_state import (
    MAX_COMMENT,
    MLFLOW_UI_USER,
    TRANSITIONS,
    VIAS,
    approval_log,
    decision,
    get_status,
    last_entry,
    unrecorded_decision,
    version_label,
)
from airflow_saga.core.governance import observe, set_status

__all__ = [
    "MAX_COMMENT",
    "MLFLOW_UI_USER",
    "TRANSITIONS",
    "VIAS",
    "approval_log",
    "decision",
    "get_status",
    "last_entry",
    "observe",
    "set_status",
    "unrecorded_decision",
    "version_label",
]
