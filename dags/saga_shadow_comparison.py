"""saga_shadow_comparison: champion vs challenger on the same live requests (or a replayed dataset), daily.

compare reads the gateway's capture window (requests mirrored to the challenger: the run's data interval
when scheduled, so a re-run judges the same traffic; start/end/window_hours otherwise), or replays a
dataset through both models when ``replay_dataset`` is set, and builds the report: agreement,
differences, latency, errors, and accuracy/F1 or MAE/RMSE with confidence intervals once ground truth has
arrived, overall and per slice (the training gate's slice definitions). gate applies
the training gate's condition language to it, logs JSON + HTML on the challenger version's run, and then
promotes the challenger (Approved versions only, recorded in the promotion history), keeps testing, or
removes the challenger alias. Imports only Airflow and airflow_saga's operators.
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.sdk import DAG, Param

from airflow_saga.operators.shadow import (
    DEFAULT_SHADOW_CONDITIONS,
    ShadowComparisonOperator,
    ShadowGateOperator,
)

with DAG(
    dag_id="saga_shadow_comparison",
    description="Compare the challenger with the champion on shadow traffic and promote, keep or remove it",
    schedule=timedelta(days=1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["saga", "mlops", "monitoring"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "model_name": Param("saga-breast-cancer", type="string", minLength=1, maxLength=200),
        "capture_dir": Param(
            os.environ.get("SAGA_CAPTURE_DIR") or ".saga/capture",
            type="string",
            minLength=1,
            description="Gateway capture root (saga serve --capture-dir)",
        ),
        "window_hours": Param(
            24,
            type="number",
            exclusiveMinimum=0,
            description="Runs without a logical date (REST/UI default): look-back window ending now. "
            "Scheduled runs judge their data interval; start/end override both",
        ),
        "start": Param("", type="string", description="Window start, ISO-8601 UTC (optional)"),
        "end": Param("", type="string", description="Window end, ISO-8601 UTC (optional; default now)"),
        "conditions": Param(
            DEFAULT_SHADOW_CONDITIONS,
            type="string",
            minLength=1,
            description="Gate over candidate.* (challenger) and champion.* metrics, e.g. "
            "'error_rate <= 0.01 and agreement >= 0.95 and accuracy >= champion.accuracy'",
        ),
        "min_requests": Param(
            100,
            type="integer",
            minimum=1,
            description="Fewer mirrored requests than this: skip (too small to judge)",
        ),
        "on_pass": Param(
            "keep",
            type="string",
            enum=["promote", "keep", "remove"],
            description="promote: challenger becomes champion (must be Approved)",
        ),
        "on_fail": Param(
            "keep",
            type="string",
            enum=["promote", "keep", "remove"],
            description="remove: drop the challenger alias; keep: keep testing",
        ),
        "prediction_task": Param("auto", type="string", enum=["auto", "classification", "regression"]),
        "regression_tolerance": Param(
            0.01, type="number", minimum=0, description="Regression: relative difference counted as agreement"
        ),
        "replay_dataset": Param(
            "",
            type="string",
            description="Offline mode: dataset to replay through both models instead of "
            "capture (path, sklearn:<name> or runs:/ URI)",
        ),
        "replay_target": Param("", type="string", description="Label column of the replay dataset"),
        "slices": Param(
            [],
            type=["array", "string"],
            description="Slice definitions for per-slice agreement and quality, e.g. "
            '["region", {"column": "age", "edges": [40, 65]}]; empty: the challenger\'s evaluation '
            "report's slices. Gate on them with e.g. slice_improves(accuracy, min_absolute=-0.02)",
        ),
        "slice_min_rows": Param(
            30, type="integer", minimum=1, description="Slices with fewer compared rows are not gated on"
        ),
    },
) as dag:
    compare = ShadowComparisonOperator(
        task_id="compare",
        model_name="{{ params.model_name }}",
        capture_dir="{{ params.capture_dir }}",
        window_hours="{{ params.window_hours }}",
        start="{{ params.start }}",
        end="{{ params.end }}",
        min_requests="{{ params.min_requests }}",
        prediction_task="{{ params.prediction_task }}",
        regression_tolerance="{{ params.regression_tolerance }}",
        replay_dataset="{{ params.replay_dataset }}",
        replay_target="{{ params.replay_target }}",
        slices="{{ params.slices }}",
        slice_min_rows="{{ params.slice_min_rows }}",
    )
    gate = ShadowGateOperator(
        task_id="gate",
        model_name="{{ params.model_name }}",
        report="{{ ti.xcom_pull(task_ids='compare') }}",
        conditions="{{ params.conditions }}",
        on_pass="{{ params.on_pass }}",
        on_fail="{{ params.on_fail }}",
    )
    compare >> gate
