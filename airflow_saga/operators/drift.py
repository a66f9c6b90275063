"""Drift monitoring operators: detect, emit the drift Asset event, alert.

Airflow records a task's outlet (Asset) events only when the task *succeeds* (the task runner serialises
``outlet_events`` in ``_handle_current_task_success``; a failed task sends none). Drift must both emit an
event (so retraining starts) and fail a task (so Airflow's alerting fires), so the work is three tasks:

1. ``DriftMonitorOperator`` computes drift, logs it, and succeeds whatever the verdict (skips with the
   reason when the window is too small to judge).
2. ``DriftAssetEventOperator`` (outlet: the ``saga-drift`` alias) succeeds only on drift, attaching the
   model's asset ``saga://drift/<model>`` with the verdict as event ``extra``; otherwise it skips.
3. ``DriftAlertOperator`` fails with the per-feature summary on drift, and succeeds otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_saga.links import MlflowRunLink, mlflow_run_url, set_mlflow_links
from airflow_saga.openlineage import OpenLineageMixin
from airflow_saga.operators._monitor import default_capture_dir, resolve_window
from airflow_saga.operators._util import as_dict, saga_errors
from airflow_saga.operators.base import SagaBaseOperator, airflow_facts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

MAX_EXTRA_FEATURES = 50


class DriftMonitorOperator(OpenLineageMixin, SagaBaseOperator):
    """Evidently drift of ``model_name``'s capture window against the served version's baseline.

    :param alias: the alias whose version is judged (its baseline is the reference); default champion.
    :param thresholds: ``DriftConfig`` keys: drift_share, method, num_method, cat_method, per_column_method,
        threshold, num_threshold, cat_threshold, per_column_threshold, sample_rows, min_rows; and for the
        model quality on ``/feedback`` labels (informative, not part of the verdict): min_labelled_rows
        (default 30) and task (auto, classification or regression).
    :param evidently_workspace: local Evidently workspace path ('' to skip) for ``evidently ui`` trends.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "capture_dir",
        "window_hours",
        "start",
        "end",
        "alias",
        "thresholds",
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
        thresholds: dict[str, Any] | str | None = None,
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
        self.thresholds = thresholds
        self.evidently_workspace = evidently_workspace
        self.experiment = experiment

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_saga.core import drift
        from airflow_saga.core.baselines import resolve_baseline
        from airflow_saga.core.monitoring import add_to_workspace, log_drift_run
        from airflow_saga.core.registry import version_by_alias

        name, alias = str(self.model_name), str(self.alias)
        s, e = resolve_window(self.start, self.end, self.window_hours)
        window = {"start": s.isoformat(), "end": e.isoformat()}
        with saga_errors():
            config = drift.DriftConfig.from_dict(as_dict(self.thresholds, "thresholds"))
            client = self.hook.client
            mv = version_by_alias(client, name, alias)
            if mv is None:
                raise AirflowFailException(
                    f"Model {name!r} has no {alias!r} alias: no served version to monitor"
                )
            version = str(mv.version)
            root = str(self.capture_dir or default_capture_dir())
            current = drift.read_current(root, name, s, e)
            if len(current) < config.min_rows:
                raise AirflowSkipException(
                    f"Not enough traffic to judge drift of {name!r} v{version}: {len(current)} captured "
                    f"row(s) in [{window['start']}, {window['end']}) under {root}; "
                    f"min_rows is {config.min_rows}"
                )
            baseline = resolve_baseline(self.hook.settings, client, name, version)
            self.log.info(
                "Drift of %r v%s: %d captured rows vs baseline %s (%d rows)",
                name,
                version,
                len(current),
                baseline.reference_uri,
                len(baseline.reference),
            )
            try:
                result, snapshot = drift.compute_drift(
                    baseline, current, config, model_name=name, window=window
                )
            except drift.InsufficientDataError as exc:
                raise AirflowSkipException(f"Not enough data to judge drift: {exc}") from exc
            labelled, captured = drift.read_labelled(root, name, s, e, version)
            result["quality"], quality_snapshot = drift.compute_quality(
                labelled, config, model_name=name, version=version, captured_rows=captured
            )
            logged = log_drift_run(
                client,
                result,
                snapshot,
                experiment=str(self.experiment),
                airflow=airflow_facts(context),
                quality_snapshot=quality_snapshot,
            )
            result["mlflow"] = logged
            ws = str(self.evidently_workspace or "")
            if ws and snapshot is not None:
                result["evidently"] = add_to_workspace(ws, f"saga-{name}", snapshot)
            if ws and quality_snapshot is not None:
                result["evidently_quality"] = add_to_workspace(ws, f"saga-{name}", quality_snapshot)
        self.log.info("%s", drift.summary(result))
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
        out = ol.artifact_dataset(
            ns, logged.get("result_uri"), decision="drift" if result.get("dataset_drift") else "no_drift"
        )
        return [window, version], [out]


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
        if not result.get("dataset_drift"):
            raise AirflowSkipException(f"No drift for {result.get('model_name')!r}: no asset event")
        name = str(result["model_name"])
        asset = drift_asset(name)
        extra = {
            "model_name": name,
            "version": str(result.get("version")),
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
        if result.get("dataset_drift"):
            link = (result.get("mlflow") or {}).get("html_uri")
            raise AirflowFailException(text + (f"\nEvidently report: {link}" if link else ""))
        self.log.info("%s", text)
