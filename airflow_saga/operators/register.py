"""RegisterModelOperator: register the candidate with an approval status and full lineage tags."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_saga.links import (
    MlflowModelVersionLink,
    MlflowRunLink,
    mlflow_model_version_url,
    mlflow_run_url,
    set_mlflow_links,
)
from airflow_saga.openlineage import OpenLineageMixin, as_mapping
from airflow_saga.operators._util import as_bool, as_dict, saga_errors
from airflow_saga.operators.base import SagaBaseOperator, airflow_facts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class RegisterModelOperator(OpenLineageMixin, SagaBaseOperator):
    """Register a trained model version (SageMaker's RegisterModel step).

    The version starts ``PendingManualApproval``, or ``Approved`` when ``auto_approve`` is true (the DAG asks
    for automatic approval when the gate passes). It carries lineage tags: source run, dataset digest and
    source, code version (package version and DAG file hash), Airflow DAG/run/task and the run URL, metrics
    and the gate decision. Idempotent: a retried or re-run task for the same training run returns the
    version it created before and creates nothing.

    :param model_name: the registered model (created if missing).
    :param training: the ``TrainModelOperator`` result.
    :param report: the evaluation report (optional; its candidate metrics become ``saga.metric.*`` tags).
    :param decision: the gate decision record (optional).
    :param auto_approve: register as Approved instead of PendingManualApproval.
    """

    template_fields: Sequence[str] = ("model_name", "training", "report", "decision", "auto_approve")
    ui_color = "#efd9f7"
    operator_extra_links = (MlflowModelVersionLink(), MlflowRunLink())

    def __init__(
        self,
        *,
        model_name: str,
        training: dict[str, Any] | str,
        report: dict[str, Any] | str | None = None,
        decision: dict[str, Any] | str | None = None,
        auto_approve: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training = training
        self.report = report
        self.decision = decision
        self.auto_approve = auto_approve

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core import tags as T
        from airflow_saga.core.lineage import lineage_tags
        from airflow_saga.core.registry import register_version

        training = as_dict(self.training, "training")
        report = as_dict(self.report, "report")
        decision = as_dict(self.decision, "decision")
        auto = as_bool(self.auto_approve, "auto_approve")
        facts = airflow_facts(context)
        tags = lineage_tags(
            run_id=training["run_id"],
            model_uri=training["model_uri"],
            dataset=training.get("dataset"),
            airflow=facts,
            estimator=training.get("estimator"),
            metrics=(report.get("candidate") or {}).get("metrics"),
            gate={**decision, "report_uri": decision.get("decision_uri")} if decision else None,
            eval_report_uri=report.get("report_uri"),
        )
        if training.get("reference_uri"):
            tags[T.BASELINE_URI] = training["reference_uri"]
        if training.get("reference_stats_uri"):
            tags[T.BASELINE_STATS_URI] = training["reference_stats_uri"]
        if training.get("cache_hit"):
            tags[T.CACHE_HIT] = "true"
            tags[T.CACHE_SOURCE_RUN] = str(training.get("cache_source_run_id"))
        with saga_errors():
            client = self.hook.client
            mv, created = register_version(
                client,
                str(self.model_name),
                model_uri=training["model_uri"],
                run_id=training["run_id"],
                tags=tags,
                approval_status=T.APPROVED if auto else T.PENDING,
                approved_by="airflow-saga (auto-approve: gate passed)" if auto else "airflow-saga",
                via="airflow",
            )
        status = mv.tags.get(T.APPROVAL_STATUS) if mv.tags else None
        self.log.info(
            "%s %s version %s (%s) from run %s",
            "Registered" if created else "Found existing (idempotent retry):",
            self.model_name,
            mv.version,
            status,
            training["run_id"],
        )
        ui = self.hook.settings.browser_url
        url = mlflow_model_version_url(ui, str(self.model_name), str(mv.version))
        set_mlflow_links(
            self,
            context,
            model_version_url=url,
            run_url=mlflow_run_url(ui, str(training.get("experiment_id")), training["run_id"]),
        )
        return {
            "name": str(self.model_name),
            "version": str(mv.version),
            "created": created,
            "approval_status": status,
            "model_uri": training["model_uri"],
            "run_id": training["run_id"],
            "version_url": url,
        }

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: data (digest), model and reports in; the registered model version out."""
        from airflow_saga import openlineage as ol

        training, ns = as_mapping(self.training), self.saga_namespace()
        report, decision = as_mapping(self.report), as_mapping(self.decision)
        ds = training.get("dataset") or {}
        inputs = [
            ol.source_dataset(ds["source"], digest=ds.get("digest"), rows=ds.get("rows"))
            if ds.get("source")
            else None,
            ol.artifact_dataset(ns, training.get("model_uri"), kind="MODEL", run_id=training.get("run_id")),
            ol.artifact_dataset(ns, report.get("report_uri")),
            ol.artifact_dataset(ns, decision.get("decision_uri"), decision=decision.get("passed")),
        ]
        if not result:
            return inputs, []
        version = ol.model_version_dataset(
            ns,
            result["name"],
            result["version"],
            run_id=result.get("run_id"),
            uri=result.get("model_uri"),
            approval_status=result.get("approval_status"),
        )
        return inputs, [version]
