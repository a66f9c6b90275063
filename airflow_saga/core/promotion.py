"""Champion/challenger promotion, rollback and the promotion history: the public entry points.

Why: MLflow aliases move silently and keep no history, so "what served production last Tuesday, and who
changed it" has no answer, and rollback depends on someone's memory. Every alias change saga makes is
recorded as a history entry ``{seq, at, by, action, alias, from, to, reason}`` (``action`` is ``promote``
| ``rollback`` | ``demote``); how entries are stored is in ``core.alias_history``.

Rules (applied by the governance unit of work, ``core.governance``, under the model's lock):

- champion: only Approved versions (anything else is refused with the version and its status).
- challenger: any version that is not Rejected (a Pending version may be shadow-tested before approval, as
  SageMaker allows shadow variants of unapproved packages), and not the current champion.
- Promoting a version to the alias it already holds is a no-op (retried tasks), with no history entry,
  unless the alias was moved there outside saga: then the promotion records that move (by the rules).
- Promoting the challenger to champion also clears the challenger alias (recorded as ``demote``).
- rollback: champion goes back to the previous champion (the most recent earlier holder that is still
  Approved and was not itself rolled back) or to a given Approved version; the version rolled back from is
  tagged ``saga.rollback.reason|at|by``.
- ``expect_holder=`` makes any change conditional on who holds the alias now (checked inside the lock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_saga.core.alias_history import (
    ALIASES,
    HistoryPage,
    aliases,
    entries_for_version,
    history,
    history_page,
)
from airflow_saga.core.governance import AUTO, UNSET, PromotionResult, promote, remove_alias, rollback

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "ALIASES",
    "AUTO",
    "UNSET",
    "HistoryPage",
    "PromotionResult",
    "aliases",
    "aliases_of",
    "entries_for_version",
    "history",
    "history_page",
    "promote",
    "remove_alias",
    "rollback",
]


def aliases_of(client: MlflowClient, name: str, version: str) -> set[str]:
    """The aliases ``version`` holds."""
    return {alias for alias, v in aliases(client, name).items() if v == str(version)}
