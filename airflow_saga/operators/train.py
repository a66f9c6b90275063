"""TrainModelOperator: fit an estimator spec on a data source and log the run, model and data to MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_saga.links import MlflowRunLink, mlflow_run_url, set_mlflow_links
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators._util import as_bool, as_dict, saga_errors
from airflow_saga.operators.base import SagaBaseOperator, airflow_facts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class TrainModelOperator(OpenLineageMixin, SagaBaseOperator):
    """Train a scikit-learn estimator and record it in MLflow (SageMaker's TrainingStep).

    Logs a run with the params, the training and held-out data as MLflow dataset inputs (content digest and
    source), the model with signature, input example and pinned requirements, and tags naming the Airflow
    DAG, run, task and try. Pushes ``run_id`` and ``model_uri`` to XCom; the return value is the full
    training summary that ``EvaluateModelOperator`` and ``RegisterModelOperator`` take.

    :param model_name: registered model this training feeds (names the experiment ``saga/<model_name>``).
    :param estimator: import path of an estimator/Pipeline class or a ``module:factory`` callable.
    :param hyperparameters: passed to ``set_params``; unknown names fail the task.
    :param data_source: CSV/Parquet path or URI, or ``sklearn:<bundled dataset>``.
    :param target: target column name.
    :param test_size: held-out fraction for evaluation.
    :param cache: opt-in step caching keyed on spec + dataset content digest + package version.
    :param cache_expire_after: ISO-8601 duration (``P30D``) or seconds.
    :param allowed_estimator_prefixes: modules estimators may be imported from (UI params are untrusted).
    """

    template_fields: Sequence[str] = (
        "model_name",
        "estimator",
        "hyperparameters",
        "data_source",
        "target",
        "test_size",
        "random_state",
        "experiment_name",
        "cache",
        "cache_expire_after",
    )
    template_fields_renderers = {"hyperparameters": "json"}
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#d5e8f7"

    def __init__(
        self,
        *,
        model_name: str,
        estimator: str,
        data_source: str,
        target: str,
        hyperparameters: dict[str, Any] | str | None = None,
        test_size: float | str = 0.25,
        random_state: int | str = 42,
        experiment_name: str | None = None,
        cache: bool | str = False,
        cache_expire_after: str | int | None = "P30D",
        allowed_estimator_prefixes: Sequence[str] = ("sklearn.",),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.estimator = estimator
        self.data_source = data_source
        self.target = target
        self.hyperparameters = hyperparameters
        self.test_size = test_size
        self.random_state = random_state
        self.experiment_name = experiment_name
        self.cache = cache
        self.cache_expire_after = cache_expire_after
        self.allowed_estimator_prefixes = tuple(allowed_estimator_prefixes)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core.training import TrainSpec, train

        with saga_errors():
            spec = TrainSpec(
                model_name=str(self.model_name),
                estimator=str(self.estimator),
                data_source=str(self.data_source),
                target=str(self.target),
                hyperparameters=as_dict(self.hyperparameters, "hyperparameters"),
                test_size=float(self.test_size),
                random_state=int(self.random_state),
                experiment_name=self.experiment_name or None,
                cache_enabled=as_bool(self.cache, "cache"),
                cache_expire_after=self.cache_expire_after,
                allowed_prefixes=self.allowed_estimator_prefixes,
            )
            result = train(self.hook.client, spec, airflow=airflow_facts(context), log=self.log)
        ti = context["ti"]
        ti.xcom_push(key="run_id", value=result["run_id"])
        ti.xcom_push(key="model_uri", value=result["model_uri"])
        self.log.info(
            "Trained %s on %s (digest %s, %d rows): run %s, model %s%s",
            spec.estimator,
            spec.data_source,
            result["dataset"]["digest"],
            result["dataset"]["rows"],
            result["run_id"],
            result["model_uri"],
            f" [cache hit from run {result['cache_source_run_id']}]" if result["cache_hit"] else "",
        )
        set_mlflow_links(
            self,
            context,
            run_url=mlflow_run_url(self.hook.settings.browser_url, result["experiment_id"], result["run_id"]),
        )
        return result

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: the data source (with its content digest) in; the logged model out."""
        from airflow_saga import openlineage as ol

        if not result:
            return [ol.source_dataset(str(self.data_source))], []
        ds, ns = result.get("dataset") or {}, self.saga_namespace()
        data = ol.source_dataset(
            ds.get("source") or str(self.data_source),
            digest=ds.get("digest"),
            rows=ds.get("rows"),
            target=ds.get("target"),
        )
        model = ol.artifact_dataset(ns, result.get("model_uri"), kind="MODEL", run_id=result.get("run_id"))
        return [data], [model]
