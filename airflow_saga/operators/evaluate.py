"""EvaluateModelOperator: metrics for the candidate and the current champion on the same held-out data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_saga.links import MlflowRunLink, mlflow_run_url, set_mlflow_links
from airflow_saga.openlineage import OpenLineageMixin, as_mapping
from airflow_saga.operators._util import as_dict, saga_errors
from airflow_saga.operators.base import SagaBaseOperator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class EvaluateModelOperator(OpenLineageMixin, SagaBaseOperator):
    """Evaluate a trained candidate and the ``champion`` (if any) and write the evaluation report.

    The report (SageMaker's PropertyFile) is logged as ``evaluation/report.json`` on the training run and
    returned to XCom for ``QualityGateOperator``.

    :param model_name: registered model whose ``champion`` alias is the baseline.
    :param training: the ``TrainModelOperator`` result (usually ``"{{ ti.xcom_pull(task_ids='train') }}"``).
    """

    template_fields: Sequence[str] = ("model_name", "training")
    ui_color = "#e3f1d4"
    operator_extra_links = (MlflowRunLink(),)

    def __init__(self, *, model_name: str, training: dict[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training = training

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core.evaluation import evaluate

        training = as_dict(self.training, "training")
        for key in ("run_id", "model_uri", "holdout_uri", "target", "task"):
            if not training.get(key):
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(
                    f"training result lacks {key!r}; pass the train task's return value"
                )
        with saga_errors():
            report = evaluate(
                self.hook.settings,
                self.hook.client,
                model_name=str(self.model_name),
                candidate_uri=training["model_uri"],
                candidate_run_id=training["run_id"],
                holdout_uri=training["holdout_uri"],
                target=training["target"],
                task=training["task"],
                dataset=training.get("dataset"),
                log=self.log,
            )
        set_mlflow_links(
            self,
            context,
            run_url=mlflow_run_url(
                self.hook.settings.browser_url, str(training.get("experiment_id")), training["run_id"]
            ),
        )
        return report

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: candidate model, held-out data and the champion version in; the report out."""
        from airflow_saga import openlineage as ol

        training, report, ns = as_mapping(self.training), result or {}, self.saga_namespace()
        champion = report.get("champion") or {}
        inputs = [
            ol.artifact_dataset(ns, training.get("model_uri"), kind="MODEL", run_id=training.get("run_id")),
            ol.artifact_dataset(ns, training.get("holdout_uri"), kind="DATA"),
            ol.model_version_dataset(ns, str(self.model_name), champion["version"], alias="champion")
            if champion.get("version")
            else None,
        ]
        return inputs, [ol.artifact_dataset(ns, report.get("report_uri"), run_id=training.get("run_id"))]
