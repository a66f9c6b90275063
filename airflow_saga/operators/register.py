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
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators._util import as_bool, as_dict, saga_errors
from airflow_saga.operators.base import SagaBaseOperator, airflow_facts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class RegisterModelOperator(OpenLineageMixin, SagaBaseOperator):
    """Register a model version (SageMaker's RegisterModel step), from a training summary or any model URI.

    The version starts ``PendingManualApproval``, or ``Approved`` when ``auto_approve`` is true (the DAG asks
    for automatic approval when the gate passes). It carries lineage tags: source run, dataset digest and
    source, code version (package version and DAG file hash), Airflow DAG/run/task and the run URL, metrics
    and the gate decision, and where the model came from (``saga.lineage.origin``: trained / cache /
    external).

    Idempotent: a retried or re-run task for the same training run returns the version it created before.
    One model, one version: when a version already holds the same underlying model (a cache hit reused it),
    that version is returned with ``reused=True`` and this run is added to its lineage; the training DAG
    then skips approval and promotion, so a cache hit is never promoted over itself.

    :param model_name: the registered model (created if missing).
    :param training: a training summary (``train.output``, or a template rendering it).
    :param model_uri: instead of ``training``: any MLflow model, trained anywhere: ``runs:/<run>/<path>``,
        ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``models:/m-<id>`` or ``m-<id>``. A URI that
        does not exist fails the task and registers nothing.
    :param report: the evaluation report (optional; its candidate metrics become ``saga.metric.*`` tags).
    :param decision: the gate decision record (optional; ``gate.output["decision"]``).
    :param auto_approve: register as Approved instead of PendingManualApproval.

    XCom: the return value ``{name, version, created, reused, approval_status, model_uri, run_id, origin,
    version_url}``, and keys ``version`` and ``reused``.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "training",
        "model_uri",
        "report",
        "decision",
        "auto_approve",
    )
    ui_color = "#efd9f7"
    operator_extra_links = (MlflowModelVersionLink(), MlflowRunLink())

    def __init__(
        self,
        *,
        model_name: str,
        training: dict[str, Any] | str | None = None,
        model_uri: str | None = None,
        report: dict[str, Any] | str | None = None,
        decision: dict[str, Any] | str | None = None,
        auto_approve: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if training is None and model_uri is None:
            raise TypeError("RegisterModelOperator needs training (a training summary) or model_uri")
        self.model_name = model_name
        self.training = training
        self.model_uri = model_uri
        self.report = report
        self.decision = decision
        self.auto_approve = auto_approve

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core.registration import register_candidate

        training = as_dict(self.training, "training")
        model_uri = None if self.model_uri is None else str(self.model_uri).strip()
        if model_uri == "None" or (training and not model_uri):
            model_uri = None if training else ""  # a blank URI next to a summary means "use the summary"
        with saga_errors():
            client = self.hook.client
            result = register_candidate(
                client,
                str(self.model_name),
                training=training or None,
                model_uri=model_uri,
                report=as_dict(self.report, "report"),
                decision=as_dict(self.decision, "decision"),
                airflow=airflow_facts(context),
                auto_approve=as_bool(self.auto_approve, "auto_approve"),
                via="airflow",
                policy=self.saga_policy(self.model_name),
            )
        if result["reused"]:
            self.log.info(
                "%s version %s already holds model %s (fitted by run %s): returning it, recording this run "
                "in its lineage, registering nothing new",
                self.model_name,
                result["version"],
                result["model_uri"],
                result["registered_run_id"],
            )
        else:
            self.log.info(
                "%s %s version %s (%s) from %s",
                "Registered" if result["created"] else "Found existing (idempotent retry):",
                self.model_name,
                result["version"],
                result["approval_status"],
                f"run {result['run_id']}" if result["run_id"] else result["model_uri"],
            )
        ui = self.hook.settings.browser_url
        url = mlflow_model_version_url(ui, str(self.model_name), result["version"])
        run_url = None
        if result["run_id"] and training.get("experiment_id"):
            run_url = mlflow_run_url(ui, str(training["experiment_id"]), result["run_id"])
        set_mlflow_links(self, context, model_version_url=url, run_url=run_url)
        ti = context["ti"]
        ti.xcom_push(key="version", value=result["version"])
        ti.xcom_push(key="reused", value=result["reused"])
        return {**result, "version_url": url}

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: data (digest), model and reports in; the registered model version out."""
        from airflow_saga import openlineage as ol

        training, ns = _mapping(self.training), self.saga_namespace()
        report, decision = _mapping(self.report), _mapping(self.decision)
        ds = training.get("dataset") or {}
        model_uri = (result or {}).get("model_uri") or training.get("model_uri")
        run_id = (result or {}).get("run_id") or training.get("run_id")
        inputs = [
            ol.source_dataset(ds["source"], digest=ds.get("digest"), rows=ds.get("rows"))
            if ds.get("source")
            else None,
            ol.artifact_dataset(ns, model_uri, kind="MODEL", run_id=run_id),
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


def _mapping(value: Any) -> dict[str, Any]:
    """A field as a dict for lineage: never raises (a malformed field already failed the task)."""
    try:
        return as_dict(value, "field")
    except Exception:
        return {}
