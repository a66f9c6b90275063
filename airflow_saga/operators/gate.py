"""QualityGateOperator: SageMaker's ConditionStep (+ FailStep) over the evaluation report."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_saga.openlineage import OpenLineageMixin, as_mapping
from airflow_saga.operators._util import as_dict, saga_errors

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow.sdk import Context

    from airflow_saga.hooks.mlflow import MlflowHook


class QualityGateOperator(OpenLineageMixin, BaseBranchOperator):
    """Decide whether a candidate may proceed, from conditions over its evaluation report.

    Conditions are data, never code: a JSON object/list (``{"ge": ["accuracy", 0.9]}``, a list = AND) or
    the small grammar (``accuracy >= 0.9 and improves(f1, min_relative=0.01)``); see
    ``airflow_saga.core.conditions``. The full decision record (each condition, its operands, pass/fail)
    is logged to the candidate's run as ``gate/decision.json`` and pushed to XCom under ``decision``
    before anything else happens.

    On pass the gate follows ``if_task_ids`` (default: every direct downstream task). On block it follows
    ``else_task_ids`` when given; otherwise it fails the task with the reasons, like SageMaker's FailStep, so
    a blocked candidate is a failed run, not a silent skip.

    :param conditions: the condition spec (templated).
    :param report: the evaluation report (usually the evaluate task's XCom).
    """

    template_fields: Sequence[str] = ("conditions", "report")
    template_fields_renderers = {"conditions": "json", "report": "json"}
    ui_color = "#fbe3c0"

    def __init__(
        self,
        *,
        conditions: Any,
        report: dict[str, Any] | str,
        if_task_ids: Iterable[str] | None = None,
        else_task_ids: Iterable[str] | None = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conditions = conditions
        self.report = report
        self.if_task_ids = list(if_task_ids) if if_task_ids else None
        self.else_task_ids = list(else_task_ids) if else_task_ids else None
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        from airflow_saga.hooks.mlflow import MlflowHook

        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def choose_branch(self, context: Context) -> list[str]:
        from airflow_saga.core import conditions as C
        from airflow_saga.core import tags as T
        from airflow_saga.core.evaluation import log_json_artifact

        report = as_dict(self.report, "report")
        with saga_errors():
            condition = C.parse_condition(self.conditions)
            decision = C.evaluate(condition, report)
        decision["report_uri"] = report.get("report_uri")
        run_id = (report.get("candidate") or {}).get("run_id")
        context["ti"].xcom_push(key="decision", value=decision)
        self.log.info("Quality gate for %s:\n%s", report.get("model_name"), C.format_decision(decision))
        if run_id:
            with saga_errors():
                client = self.hook.client
                decision["decision_uri"] = log_json_artifact(client, run_id, decision, "gate/decision.json")
                client.set_tag(run_id, T.GATE_DECISION, "passed" if decision["passed"] else "blocked")
                client.set_tag(run_id, T.GATE_REPORT_URI, decision["decision_uri"])
            context["ti"].xcom_push(key="decision", value=decision)
        downstream = sorted(self.downstream_task_ids)
        if decision["passed"]:
            return self.if_task_ids or [t for t in downstream if t not in (self.else_task_ids or [])]
        if self.else_task_ids:
            self.log.warning("Gate blocked the candidate; following %s", self.else_task_ids)
            return self.else_task_ids
        reasons = "; ".join(decision.get("reasons") or ["conditions not met"])
        raise AirflowFailException(
            f"Quality gate blocked {report.get('model_name')!r} candidate (run {run_id}): {reasons}. "
            "Nothing was registered."
        )

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: the evaluation report in; the decision record (``gate/decision.json``) out."""
        from airflow_saga import openlineage as ol

        report, ns = as_mapping(self.report), ol.mlflow_namespace(self.hook.settings.tracking_uri)
        run_id = (report.get("candidate") or {}).get("run_id")
        decision = f"runs:/{run_id}/gate/decision.json" if run_id else None
        return [ol.artifact_dataset(ns, report.get("report_uri"))], [ol.artifact_dataset(ns, decision)]
