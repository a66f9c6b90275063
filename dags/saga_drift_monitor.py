"""saga_drift_monitor: drift and quality of captured traffic vs the served version's baseline, hourly.

detect_drift judges the run's data interval (scheduled runs; re-running one judges the same traffic), or
start/end/window_hours for runs without a logical date. It logs a monitoring run in MLflow (metrics,
per-feature table, Evidently HTML, estimated quality over time) and adds the snapshot to an Evidently
workspace. On drift, or when estimated or realised quality crosses quality_thresholds, emit_drift_event
records an Asset event for ``saga://drift/<model>`` (the training pipeline is scheduled on it) and
alert_on_drift fails with a summary so Airflow's alerting fires. Asset events are recorded only for
successful tasks, so emitting and failing are separate tasks. Imports only Airflow and airflow_saga's
operators.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, Param

from airflow_saga.operators.drift import DriftAlertOperator, DriftAssetEventOperator, DriftMonitorOperator

with DAG(
    dag_id="saga_drift_monitor",
    description="Detect input drift of a served model (Evidently) and trigger retraining on drift",
    schedule=timedelta(hours=1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["saga", "mlops", "monitoring"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param(
            "saga-breast-cancer",
            type="string",
            minLength=1,
            maxLength=200,
            description="Registered model whose traffic is monitored",
        ),
        "alias": Param(
            "champion",
            type="string",
            enum=["champion", "challenger"],
            description="The served version whose baseline is the reference",
        ),
        "capture_dir": Param(
            os.environ.get("SAGA_CAPTURE_DIR") or ".saga/capture",
            type="string",
            minLength=1,
            description="Gateway capture root (saga serve --capture-dir)",
        ),
        "version": Param(
            "",
            type="string",
            description="Pin the version judged (default: the one that served the alias in the window)",
        ),
        "window_hours": Param(
            1,
            type="number",
            exclusiveMinimum=0,
            description="Runs without a logical date (REST/UI default): look-back window ending now. "
            "Scheduled runs judge their data interval; start/end override both",
        ),
        "start": Param("", type="string", description="Window start, ISO-8601 UTC (optional)"),
        "end": Param("", type="string", description="Window end, ISO-8601 UTC (optional; default now)"),
        "thresholds": Param(
            {"drift_share": 0.5, "min_rows": 100, "sample_rows": 100000},
            type="object",
            description="drift_share, method/num_method/cat_method, per_column_method, threshold/"
            "num_threshold/cat_threshold, per_column_threshold (Evidently names), sample_rows, min_rows; "
            "model quality on /feedback labels: min_labelled_rows (default 30), task (auto/classification/"
            "regression); label-free estimation: estimate (true), estimation_rows, estimation_chunks, "
            "estimation_boot; quality_alert_on (['estimated', 'realised'])",
        ),
        "quality_thresholds": Param(
            {},
            type="object",
            description="Alert and retrain when estimated or realised quality crosses a limit, e.g. "
            '{"accuracy": 0.9, "roc_auc": 0.95} (minimums) or {"mae": 3.0} (maximums)',
        ),
        "evidently_workspace": Param(
            os.environ.get("SAGA_EVIDENTLY_WORKSPACE") or ".saga/evidently",
            type="string",
            description="Evidently workspace path ('' to skip)",
        ),
        "experiment": Param(
            "saga-monitoring", type="string", minLength=1, description="MLflow experiment for monitoring runs"
        ),
    },
) as dag:
    detect = DriftMonitorOperator(
        task_id="detect_drift",
        model_name="{{ params.model_name }}",
        alias="{{ params.alias }}",
        version="{{ params.version }}",
        capture_dir="{{ params.capture_dir }}",
        window_hours="{{ params.window_hours }}",
        start="{{ params.start }}",
        end="{{ params.end }}",
        thresholds="{{ params.thresholds }}",
        quality_thresholds="{{ params.quality_thresholds }}",
        evidently_workspace="{{ params.evidently_workspace }}",
        experiment="{{ params.experiment }}",
    )
    emit = DriftAssetEventOperator(
        task_id="emit_drift_event", result="{{ ti.xcom_pull(task_ids='detect_drift') }}"
    )
    alert = DriftAlertOperator(
        task_id="alert_on_drift",
        result="{{ ti.xcom_pull(task_ids='detect_drift') }}",
        trigger_rule="none_failed",
    )
    detect >> emit >> alert
