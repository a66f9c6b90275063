"""Approval in the Airflow UI (human-in-the-loop) recorded into MLflow.

Two tasks work together:

- ``ModelApprovalRequestOperator`` (built by ``model_approval_request``): Airflow 3's ``ApprovalOperator``
  with Approve/Reject buttons, a comment field, and a body listing the version's metrics and MLflow link
  (read from MLflow when the task starts). Unlike the stock operator it does *not* skip downstream tasks on
  Reject, so the next task can record the rejection; a response timeout fails with a message naming the
  model and version instead of a bare ``HITLTimeoutError``.
- ``ApproveModelOperator``: reads that task's XCom (``chosen_options``, ``params_input.comment``,
  ``responded_by_user``) and records the decision on the version with ``via="airflow"`` and the Airflow
  user's identity; on Reject it records Rejected and fails the run with the reviewer's reason.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException

from airflow_saga.links import MlflowModelVersionLink
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators.base import SagaBaseOperator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_saga.hooks.mlflow import MlflowHook


class ModelApprovalRequestOperator(ApprovalOperator):
    """Ask a human to approve ``model_name`` version ``version`` in the Airflow UI."""

    template_fields: Sequence[str] = ("subject", "body", "model_name", "version")
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        version: str,
        mlflow_conn_id: str = "mlflow_default",
        governance_policy: Any = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", f"Approve model {model_name} version {version}?")
        kwargs.setdefault(
            "params", {"comment": Param("", type="string", description="Why (recorded in MLflow)")}
        )
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.mlflow_conn_id = mlflow_conn_id
        self.governance_policy = governance_policy

    def _assign(self) -> None:
        """Only the policy's approvers may answer: set ``assigned_users`` from them (minus the trainer
        under four-eyes), or check the ones the DAG gave. Airflow then refuses anyone else (HTTP 403)."""
        from airflow_saga.core import policy as P
        from airflow_saga.core.registry import get_version
        from airflow_saga.policies import policy_for

        policy = policy_for(str(self.model_name), self.governance_policy)
        names = P.approvers_of(policy)
        if names is None:
            return  # anyone may approve: leave assigned_users as the DAG set it
        trainer = None
        if getattr(getattr(policy, "rules", None), "four_eyes", False):
            tags = get_version(self.hook.client, self.model_name, self.version).tags or {}
            trainer = tags.get(P.TRIGGERED_BY_TAG)
        allowed = [n for n in names if not trainer or n != P.identity(trainer)]
        directory = getattr(policy, "directory", None)
        if self.assigned_users:
            given = [str(u.get("name") or u.get("id")) for u in self.assigned_users]
            bad = [n for n in given if n not in allowed]
            if bad:
                excluded = f"; the trainer {P.identity(trainer)!r} is excluded (four-eyes)" if trainer else ""
                raise AirflowFailException(
                    f"assigned_users {', '.join(bad)} may not approve model {self.model_name!r} version "
                    f"{self.version} under policy {policy.name!r} (approvers: {', '.join(allowed) or 'none'}"
                    f"{excluded})"
                )
            return
        if not allowed:
            raise AirflowFailException(
                f"Nobody can approve model {self.model_name!r} version {self.version}: policy "
                f"{policy.name!r} admits no Airflow user other than the trainer {trainer!r}"
            )
        self.assigned_users = [
            {"id": (directory.users[n][0] if directory and n in directory.users else n), "name": n}
            for n in allowed
        ]
        self.log.info("Assigned to the policy's approvers: %s", ", ".join(allowed))

    @property
    def hook(self) -> MlflowHook:
        from airflow_saga.hooks.mlflow import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def _describe(self, context: Context) -> str:
        """Markdown with the version's metrics, gate verdict and links, read from MLflow now."""
        from airflow_saga.core import tags as T
        from airflow_saga.core.registry import get_version
        from airflow_saga.operators._governance import link_version

        hook = self.hook
        link_version(self, context, self.model_name, str(self.version))
        mv = get_version(hook.client, self.model_name, self.version)
        tags = dict(mv.tags or {})
        lines = [f"**Model** `{self.model_name}` **version** `{mv.version}`", ""]
        metrics = {k[len(T.METRIC_PREFIX) :]: v for k, v in tags.items() if k.startswith(T.METRIC_PREFIX)}
        if metrics:
            lines += [
                "| metric | value |",
                "|---|---|",
                *[f"| {k} | {v} |" for k, v in sorted(metrics.items())],
                "",
            ]
        if tags.get(T.GATE_DECISION):
            lines.append(f"Quality gate: **{tags[T.GATE_DECISION]}** {tags.get(T.GATE_SUMMARY, '')}")
        for label, key in (("Dataset digest", T.DATASET_DIGEST), ("Evaluation report", T.EVAL_REPORT_URI)):
            if tags.get(key):
                lines.append(f"{label}: `{tags[key]}`")
        url = (getattr(self, "_saga_link", None) or {}).get("model_version_url")
        if url:
            lines.append(f"\n[Open version {mv.version} in MLflow]({url})")
        return "\n".join(lines)

    def execute(self, context: Context) -> Any:
        from airflow_saga.operators._util import saga_errors

        with saga_errors():
            self._assign()
        try:
            described = self._describe(context)
        except Exception as exc:  # the request must still reach the human; say what is missing
            self.log.warning(
                "Could not read model %r version %s from MLflow: %s", self.model_name, self.version, exc
            )
            described = (
                f"Model `{self.model_name}` version `{self.version}` (MLflow details unavailable: {exc})"
            )
        self.body = f"{self.body}\n\n{described}" if self.body else described
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from airflow.providers.standard.exceptions import HITLTimeoutError

        try:
            # HITLOperator's handling only: record the answer, never skip downstream on Reject.
            ret = HITLOperator.execute_complete(self, context=context, event=event)
        except HITLTimeoutError as exc:
            raise AirflowFailException(
                f"Approval of model {self.model_name!r} version {self.version} timed out after "
                f"{self.response_timeout} with no decision; the version stays PendingManualApproval"
            ) from exc
        self.hitl_summary_extra["approved"] = ret["chosen_options"][0] == self.APPROVE
        return ret


def model_approval_request(
    *,
    model_name: str,
    version: str,
    task_id: str = "approve_in_airflow",
    mlflow_conn_id: str = "mlflow_default",
    response_timeout: timedelta | None = timedelta(days=3),
    assigned_users: Any = None,
    body: str | None = None,
    **kwargs: Any,
) -> ModelApprovalRequestOperator:
    """The HITL approval task for one model version; follow it with ``ApproveModelOperator``.

    No ``defaults`` on purpose: a timeout must never count as an approval.
    """
    return ModelApprovalRequestOperator(
        task_id=task_id,
        model_name=model_name,
        version=version,
        mlflow_conn_id=mlflow_conn_id,
        response_timeout=response_timeout,
        assigned_users=assigned_users,
        body=body,
        **kwargs,
    )


class ApproveModelOperator(OpenLineageMixin, SagaBaseOperator):
    """Record the Airflow HITL decision of ``hitl_task_id`` on the model version in MLflow.

    :param version: templated.
    :param hitl_task_id: the ``ModelApprovalRequestOperator`` task whose ``return_value`` holds the answer.
    """

    template_fields: Sequence[str] = ("model_name", "version")
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self, *, model_name: str, version: str, hitl_task_id: str = "approve_in_airflow", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.hitl_task_id = hitl_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        answer = context["ti"].xcom_pull(task_ids=self.hitl_task_id)
        if not answer:
            raise AirflowFailException(
                f"No approval answer from task {self.hitl_task_id!r} for model {self.model_name!r} "
                f"version {self.version}"
            )
        return record_hitl_decision(self, context, answer)

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: the version in; the same version, with its recorded approval status, out."""
        from airflow_saga import openlineage as ol

        ns, name, version = self.saga_namespace(), str(self.model_name), str(self.version)
        status = (result or {}).get("status")
        return [ol.model_version_dataset(ns, name, version)], [
            ol.model_version_dataset(ns, name, version, approval_status=status) if status else None
        ]


def _policy_of(operator: Any, name: str) -> Any:
    """The operator's governance policy (its ``governance_policy``, else the Variable); None: default."""
    from airflow_saga.policies import policy_for

    return policy_for(str(name), getattr(operator, "governance_policy", None))


def record_hitl_decision(
    operator: SagaBaseOperator, context: Context, answer: dict[str, Any]
) -> dict[str, Any]:
    """Write one HITL answer to MLflow; fail the run on Reject. Shared so custom DAGs can reuse it."""
    from airflow_saga.core import approval
    from airflow_saga.core import tags as T
    from airflow_saga.operators._governance import link_version
    from airflow_saga.operators._util import saga_errors

    name, version = operator.model_name, str(operator.version)  # type: ignore[attr-defined]
    chosen = list(answer.get("chosen_options") or [])
    user = answer.get("responded_by_user") or {}
    by = str(user.get("name") or user.get("id") or "airflow:timeout-default")
    comment = str((answer.get("params_input") or {}).get("comment") or "")
    status = T.APPROVED if chosen == [ApprovalOperator.APPROVE] else T.REJECTED
    link_version(operator, context, name, version)
    ti = context["ti"]
    note = f"{comment} [airflow {ti.dag_id}/{ti.run_id}]".strip()
    with saga_errors():
        mv = approval.set_status(
            operator.hook.client,
            name,
            version,
            status,
            by=by,
            comment=note,
            via="airflow",
            policy=_policy_of(operator, name),
        )
    operator.log.info("Model %r version %s: %s by %s via airflow (%s)", name, version, status, by, comment)
    if status == T.REJECTED:
        raise AirflowFailException(
            f"Model {name!r} version {version} was rejected by {by}: {comment or '(no reason given)'}"
        )
    return {"model": name, "version": str(mv.version), "status": status, "by": by, "comment": comment}
