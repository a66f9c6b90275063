"""ApprovalRouteOperator: pick the pipeline's approval path from the run's ``approval_mode``.

A small operator rather than ``@task.branch``: the decorator pulls in the standard provider's whole Python
operator stack (~17 ms) at every DAG parse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

APPROVAL_MODES = ("airflow", "mlflow", "auto")


class ApprovalRouteOperator(BaseBranchOperator):
    """Follow ``routes[mode]``; an unknown mode fails the task naming the allowed ones.

    :param mode: templated; ``airflow``, ``mlflow`` or ``auto``.
    :param routes: mode -> downstream task id.
    """

    template_fields: Sequence[str] = ("mode",)

    def __init__(self, *, mode: str, routes: dict[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.routes = dict(routes)

    def choose_branch(self, context: Context) -> str:
        mode = str(self.mode).strip()
        if mode not in self.routes:
            raise AirflowFailException(f"approval_mode {mode!r} is not one of {sorted(self.routes)}")
        self.log.info("Approval mode %r: following %s", mode, self.routes[mode])
        return self.routes[mode]
