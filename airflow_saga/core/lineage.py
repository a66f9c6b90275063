"""Lineage tags: what every model version records about where it came from.

The chain is version -> training run -> dataset (content digest, source) -> code version (package version,
DAG file hash) -> Airflow DAG run (ids and URL) -> evaluation report -> gate decision. Queries over these
tags live in ``airflow_saga.core.lineage_query``.
"""

from __future__ import annotations

from typing import Any

from airflow_saga import __version__
from airflow_saga.core import tags as T


def lineage_tags(
    *,
    run_id: str | None,
    model_uri: str,
    dataset: dict[str, Any] | None = None,
    airflow: dict[str, str] | None = None,
    estimator: str | None = None,
    metrics: dict[str, float] | None = None,
    gate: dict[str, Any] | None = None,
    eval_report_uri: str | None = None,
    origin: str | None = None,
    flavor: str | None = None,
    extra: dict[str, str | None] | None = None,
    champion: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Flatten lineage facts into MLflow tag key/values (all strings, ``None`` dropped).

    ``origin`` is ``trained`` (fitted by this pipeline), ``cache`` (a cache hit reusing an earlier run's
    model) or ``external`` (a model URI trained elsewhere); ``run_id`` may be None for an external model
    logged outside any run. ``champion`` is the evaluation report's champion entry (``{version,
    metrics}``): the champion's version and numeric metrics in the same evaluation, so the version's
    description can show the candidate against it.
    """
    out: dict[str, str | None] = {
        T.RUN_ID: run_id,
        T.MODEL_URI: model_uri,
        T.PACKAGE_VERSION: __version__,
        T.ESTIMATOR: estimator,
        T.EVAL_REPORT_URI: eval_report_uri,
        T.ORIGIN: origin,
        T.MODEL_FLAVOR: flavor,
        **(extra or {}),
    }
    if dataset:
        out[T.DATASET_DIGEST] = dataset.get("digest")
        out[T.DATASET_SOURCE] = dataset.get("source")
        rows = dataset.get("rows")
        out[T.DATASET_ROWS] = None if rows is None else str(rows)
    if airflow:
        out[T.AIRFLOW_DAG_ID] = airflow.get("dag_id")
        out[T.AIRFLOW_RUN_ID] = airflow.get("run_id")
        out[T.AIRFLOW_TASK_ID] = airflow.get("task_id")
        out[T.AIRFLOW_TRY_NUMBER] = airflow.get("try_number")
        out[T.AIRFLOW_RUN_URL] = airflow.get("run_url")
        out[T.AIRFLOW_TRIGGERED_BY] = airflow.get("triggered_by")
        out[T.DAG_FILE_HASH] = airflow.get("dag_file_hash")
    for key, value in (metrics or {}).items():
        out[T.metric_tag(key)] = repr(float(value))
    if champion and not champion.get("error"):
        out[T.EVAL_CHAMPION_VERSION] = None if champion.get("version") is None else str(champion["version"])
        for key, value in (champion.get("metrics") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"{T.EVAL_CHAMPION_METRIC_PREFIX}{key}"] = repr(float(value))
    if gate:
        out[T.GATE_DECISION] = "passed" if gate.get("passed") else "blocked"
        out[T.GATE_REPORT_URI] = gate.get("report_uri")
        summary = gate.get("expression")
        out[T.GATE_SUMMARY] = None if summary is None else str(summary)[:5000]
    return {k: str(v) for k, v in out.items() if v is not None}
