"""EvaluateModelOperator: metrics for the candidate and the current champion on the same held-out data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_saga.links import MlflowRunLink, mlflow_run_url, set_mlflow_links
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators._util import as_dict, as_int, as_value, saga_errors
from airflow_saga.operators.base import SagaBaseOperator, airflow_facts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

# Same as core.metrics.DEFAULT_ALLOWED_METRIC_PREFIXES (not imported: this module must stay light).
DEFAULT_METRIC_PREFIXES: tuple[str, ...] = ("sklearn.metrics",)


class EvaluateModelOperator(OpenLineageMixin, SagaBaseOperator):
    """Evaluate a candidate and the ``champion`` (if any) on the same held-out rows; write the report.

    The candidate is the model of a training summary (``training=train.output``), or any MLflow model URI
    trained anywhere (``model_uri="models:/churn/7"``, ``"runs:/<run>/model"``, ``"models:/churn@staging"``,
    ``"m-<id>"``), with held-out data from any data source. Models of MLflow's sklearn flavour (also
    XGBoost/LightGBM with the scikit-learn API) are scored as estimators, so ROC AUC and log loss are
    available; every other flavour through pyfunc. The report (SageMaker's PropertyFile) is logged as
    ``evaluation/report.json`` on the training run, or on an evaluation run of its own for a model with no
    training run here, and returned to XCom for ``QualityGateOperator``.

    :param model_name: registered model whose ``champion`` alias is the baseline.
    :param training: a training summary (``train.output``); gives the model URI, run, held-out data,
        target, task and features unless given explicitly below.
    :param model_uri: the candidate's MLflow model URI (overrides the training summary's).
    :param holdout: the held-out data: any data source (CSV/Parquet path or URI, ``sklearn:<name>``,
        ``module:function``, ``sql:<conn_id>:<query>`` or ``{"sql": ..., "conn_id": ...}``), or a
        ``runs:/`` artifact; default the training summary's held-out split.
    :param target: the target column (default: the training summary's).
    :param task: ``classification`` or ``regression`` (default: the training summary's, the model's own,
        or inferred from the target).
    :param features: the model's input columns, for models that do not declare them (no signature).
    :param metrics: user metric functions by import path, ``{"cost": "mypkg.metrics:cost"}`` or
        ``{"cost": {"function": "mypkg.metrics:cost", "greater_is_better": false}}``.
    :param allowed_metric_prefixes: modules user metrics may come from (not templated: a trigger form
        cannot widen it). Default ``("sklearn.metrics",)``.
    :param slices: slice definitions, e.g. ``["region", {"column": "age", "edges": [18, 65]}]``.
    :param min_slice_rows: slices with fewer rows are reported but never block a gate (default 30).
    :param allowed_data_prefixes: modules a ``module:function`` held-out source may come from.
    :param allowed_conn_ids: connections a SQL held-out source may name (default: none).
    :param experiment_name: experiment for the evaluation run of a model with no training run here
        (default ``saga/<model_name>``).
    """

    template_fields: Sequence[str] = (
        "model_name",
        "training",
        "model_uri",
        "holdout",
        "target",
        "task",
        "features",
        "metrics",
        "slices",
        "min_slice_rows",
        "experiment_name",
    )
    template_fields_renderers = {"training": "json", "metrics": "json", "slices": "json"}
    ui_color = "#e3f1d4"
    operator_extra_links = (MlflowRunLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        training: dict[str, Any] | str | None = None,
        model_uri: str | None = None,
        holdout: Any = None,
        target: str | None = None,
        task: str | None = None,
        features: list[str] | str | None = None,
        metrics: dict[str, Any] | str | None = None,
        allowed_metric_prefixes: Sequence[str] = DEFAULT_METRIC_PREFIXES,
        slices: Any = None,
        min_slice_rows: int | str | None = None,
        allowed_data_prefixes: Sequence[str] = (),
        allowed_conn_ids: Sequence[str] = (),
        experiment_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.training = training
        self.model_uri = model_uri
        self.holdout = holdout
        self.target = target
        self.task = task
        self.features = features
        self.metrics = metrics
        self.allowed_metric_prefixes = tuple(allowed_metric_prefixes)
        self.slices = slices
        self.min_slice_rows = min_slice_rows
        self.allowed_data_prefixes = tuple(allowed_data_prefixes)
        self.allowed_conn_ids = tuple(allowed_conn_ids)
        self.experiment_name = experiment_name

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_saga.core.evaluation import evaluate
        from airflow_saga.hooks.sql import read_sql

        training = as_dict(self.training, "training")
        model_uri = _text(self.model_uri) or training.get("model_uri")
        given = self.holdout not in (None, "", "None")
        holdout = as_value(self.holdout, "holdout") if given else training.get("holdout_uri")
        target = _text(self.target) or training.get("target")
        for name, value in (("model_uri", model_uri), ("holdout", holdout), ("target", target)):
            if not value:
                raise AirflowFailException(
                    f"{name} is missing: give {name}=..., or training= the train step's result (train.output)"
                )
        # The training run is the candidate's only when the candidate is the training's model.
        own_run = training.get("run_id") if model_uri == training.get("model_uri") else None
        features = self.features if self.features not in (None, "", "None") else training.get("features")
        if isinstance(features, str):
            features = as_value(features, "features")
        facts = airflow_facts(context)
        with saga_errors():
            report = evaluate(
                self.hook.settings,
                self.hook.client,
                model_name=str(self.model_name),
                candidate_uri=str(model_uri),
                candidate_run_id=own_run,
                holdout=holdout,
                target=str(target),
                task=_text(self.task) or training.get("task"),
                features=list(features) if isinstance(features, list | tuple) else None,
                dataset=training.get("dataset") if own_run else None,
                metrics=as_dict(self.metrics, "metrics") or None,
                allowed_metric_prefixes=self.allowed_metric_prefixes,
                slices=as_value(self.slices, "slices") if self.slices not in (None, "", "None") else None,
                min_slice_rows=None
                if self.min_slice_rows in (None, "", "None")
                else as_int(self.min_slice_rows, "min_slice_rows"),
                experiment_name=_text(self.experiment_name),
                origin=training.get("origin") if own_run else None,
                run_tags={f"saga.airflow.{k}": str(v) for k, v in facts.items() if v is not None},
                sql_loader=read_sql,
                allowed_data_prefixes=self.allowed_data_prefixes,
                allowed_conn_ids=self.allowed_conn_ids,
                log=self.log,
            )
            run_id = report["candidate"]["run_id"]
            experiment_id = training.get("experiment_id") if own_run else None
            if experiment_id is None:
                experiment_id = self.hook.client.get_run(run_id).info.experiment_id
        set_mlflow_links(
            self, context, run_url=mlflow_run_url(self.hook.settings.browser_url, str(experiment_id), run_id)
        )
        return report

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: candidate model, held-out data and the champion version in; the report out."""
        from airflow_saga import openlineage as ol

        report, ns = result or {}, self.saga_namespace()
        candidate, champion = report.get("candidate") or {}, report.get("champion") or {}
        run_id = candidate.get("run_id")
        inputs = [
            ol.artifact_dataset(
                ns, candidate.get("model_uri"), kind="MODEL", run_id=candidate.get("source_run_id") or run_id
            ),
            ol.artifact_dataset(ns, (report.get("dataset") or {}).get("holdout_uri"), kind="DATA"),
            ol.model_version_dataset(ns, str(self.model_name), champion["version"], alias="champion")
            if champion.get("version")
            else None,
        ]
        return inputs, [ol.artifact_dataset(ns, report.get("report_uri"), run_id=run_id)]


def _text(value: Any) -> str | None:
    """A templated text field: None, "" and the rendered "None" mean not given."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "None") else text
