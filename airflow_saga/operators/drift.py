"""Drift monitoring operators: detect, emit the drift Asset event, alert.

Airflow records a task's outlet (Asset) events only when the task *succeeds* (the task runner serialises
``outlet_events`` in ``_handle_current_task_success``; a failed task sends none). Drift must both emit an
event (so retraining starts) and fail a task (so Airflow's alerting fires), so the work is three tasks:

1. ``DriftMonitorOperator`` computes drift, logs it, and succeeds whatever the verdict (skips with the
   reason when the window is too small to judge).
2. ``DriftAssetEventOperator`` (outlet: the ``saga-drift`` alias) succeeds only when the outcome calls for
   retraining (``drift``, or ``degraded``: estimated or realised quality crossed a threshold), attaching
   the model's asset ``saga://drift/<model>`` with the verdict as event ``extra``; otherwise it skips.
3. ``DriftAlertOperator`` fails with the summary on those outcomes, and succeeds otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_saga.links import MlflowRunLink, mlflow_run_url, set_mlflow_links
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators._monitor import default_capture_dir, monitor_window
from airflow_saga.operators._util import as_dict, saga_errors
from airflow_saga.operators.base import SagaBaseOperator, airflow_facts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

    from airflow_saga.core.outcomes import MonitorOutcome

MAX_EXTRA_FEATURES = 50


class DriftMonitorOperator(OpenLineageMixin, SagaBaseOperator):
    """Drift and quality of ``model_name``'s traffic in the run's window, against the served version's
    baseline (``core.drift.monitor``); logs a monitoring run in MLflow and returns the result.

    The window is ``start``/``end`` if given, else the run's data interval (scheduled runs, backfills,
    runs given a logical date: re-running one judges the same traffic), else the last ``window_hours``.

    :param alias: the alias whose version is judged: the version that served it for most of the window's
        traffic (default champion). ``version`` pins one instead.
    :param thresholds: ``DriftConfig`` keys: drift_share, method, num_method, cat_method, per_column_method,
        threshold, num_threshold, cat_threshold, per_column_threshold, sample_rows, min_rows, batch_rows;
        labelled quality: min_labelled_rows, task; estimation: estimate, estimation_rows,
        estimation_chunks, estimation_boot.
    :param quality_thresholds: ``{metric: limit}`` on estimated and realised quality (a minimum for
        accuracy, f1, roc_auc, r2...; a maximum for mae, rmse): crossing one makes the outcome
        ``degraded``, which alerts and emits the drift Asset like drift does.
    :param evidently_workspace: local Evidently workspace path ('' to skip) for ``evidently ui`` trends.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "capture_dir",
        "window_hours",
        "start",
        "end",
        "alias",
        "version",
        "thresholds",
        "quality_thresholds",
        "evidently_workspace",
        "experiment",
    )
    ui_color = "#fde2e2"
    operator_extra_links = (MlflowRunLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        capture_dir: str | None = None,
        window_hours: float | str = 1,
        start: str | None = None,
        end: str | None = None,
        alias: str = "champion",
        version: str | int | None = None,
        thresholds: dict[str, Any] | str | None = None,
        quality_thresholds: dict[str, Any] | str | None = None,
        evidently_workspace: str | None = None,
        experiment: str = "saga-monitoring",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.capture_dir = capture_dir
        self.window_hours = window_hours
        self.start = start
        self.end = end
        self.alias = alias
        self.version = version
        self.thresholds = thresholds
        self.quality_thresholds = quality_thresholds
        self.evidently_workspace = evidently_workspace
        self.experiment = experiment

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core import drift
        from airflow_saga.core.outcomes import MonitorOutcome

        s, e, source = monitor_window(context, self.start, self.end, self.window_hours)
        settings = as_dict(self.thresholds, "thresholds")
        limits = as_dict(self.quality_thresholds, "quality_thresholds")
        if limits:
            settings["quality_thresholds"] = {**settings.get("quality_thresholds", {}), **limits}
        version = None if self.version in (None, "") else str(self.version)
        with saga_errors():
            config = drift.DriftConfig.from_dict(settings)
            check = drift.monitor(
                self.hook.settings,
                self.hook.client,
                model_name=str(self.model_name),
                capture_root=str(self.capture_dir or default_capture_dir()),
                start=s,
                end=e,
                alias=str(self.alias),
                version=version,
                config=config,
                window_source=source,
                experiment=str(self.experiment),
                airflow=airflow_facts(context),
                evidently_workspace=str(self.evidently_workspace or "") or None,
            )
        if check.outcome is MonitorOutcome.SKIPPED:
            raise AirflowSkipException(check.reason)
        result = check.result
        self.log.info("%s", drift.summary(result))
        logged = result["mlflow"]
        ui = self.hook.settings.browser_url
        set_mlflow_links(self, context, run_url=mlflow_run_url(ui, logged["experiment_id"], logged["run_id"]))
        return result

    def openlineage_io(self, result: Any) -> tuple[list, list]:
        """OpenLineage: the capture window and the served version (its baseline) in; the drift result out."""
        from airflow_saga import openlineage as ol

        if not result:
            return [], []
        ns, name = self.saga_namespace(), str(self.model_name)
        root = str(self.capture_dir or default_capture_dir())
        window = ol.source_dataset(f"{root.rstrip('/')}/{name}", window=result.get("window"))
        version = ol.model_version_dataset(ns, name, str(result["version"]), alias=str(self.alias))
        logged = result.get("mlflow") or {}
        out = ol.artifact_dataset(ns, logged.get("result_uri"), decision=_outcome(result).value)
        return [window, version], [out]


def _outcome(result: dict[str, Any]) -> MonitorOutcome:
    from airflow_saga.core.outcomes import MonitorOutcome

    value = result.get("outcome") or ("drift" if result.get("dataset_drift") else "no_drift")
    try:
        return MonitorOutcome(value)
    except ValueError:
        raise AirflowFailException(f"unknown monitor outcome {value!r} in the drift result") from None


def _retrain(result: dict[str, Any]) -> bool:
    return _outcome(result).retrain


def _result(value: Any) -> dict[str, Any]:
    result = as_dict(value, "result")
    if not result:
        raise AirflowSkipException("No drift result (the drift check was skipped)")
    return result


class DriftAssetEventOperator(BaseOperator):
    """On drift, emit ``saga://drift/<model>`` through the ``saga-drift`` alias with the verdict as extra.

    Declare ``outlets=[drift_alias()]`` (the default). Skips when there was no drift, so no event.
    """

    template_fields: Sequence[str] = ("result",)
    ui_color = "#f9d0c4"

    def __init__(self, *, result: dict[str, Any] | str, **kwargs: Any) -> None:
        from airflow_saga.assets import drift_alias

        kwargs.setdefault("outlets", [drift_alias()])
        super().__init__(**kwargs)
        self.result = result

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.assets import drift_alias, drift_asset

        result = _result(self.result)
        if not _retrain(result):
            raise AirflowSkipException(
                f"No drift or quality alert for {result.get('model_name')!r}: no asset event"
            )
        name = str(result["model_name"])
        asset = drift_asset(name)
        extra = {
            "model_name": name,
            "version": str(result.get("version")),
            "outcome": _outcome(result).value,
            "reasons": list((result.get("alert") or {}).get("reasons", []))[:MAX_EXTRA_FEATURES],
            "drift_share": result.get("drift_share"),
            "drifted_features": list(result.get("drifted_features", []))[:MAX_EXTRA_FEATURES],
            "window": result.get("window"),
            "mlflow_run_id": (result.get("mlflow") or {}).get("run_id"),
        }
        context["outlet_events"][drift_alias()].add(asset, extra=extra)
        self.log.info("Emitted asset event %s with extra %s", asset.uri, extra)
        return {"asset": asset.uri, "extra": extra}


class DriftAlertOperator(BaseOperator):
    """Fail with the per-feature summary when drift was detected (Airflow alerting), else succeed."""

    template_fields: Sequence[str] = ("result",)
    ui_color = "#f4b6b6"

    def __init__(self, *, result: dict[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result = result

    def execute(self, context: Context) -> None:
        from airflow_saga.core.drift import summary

        result = _result(self.result)
        text = summary(result)
        if _retrain(result):
            link = (result.get("mlflow") or {}).get("html_uri")
            raise AirflowFailException(text + (f"\nEvidently report: {link}" if link else ""))
        self.log.info("%s", text)
