"""Evaluate a candidate, and the current champion, on the same held-out data.

The output is the evaluation report (SageMaker's PropertyFile): a small JSON document the quality gate reads,
logged as a run artifact so the decision can be audited later against exactly what the gate saw.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags as T
from airflow_saga.core.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from airflow_saga.core.mlflow_client import MlflowSettings

REPORT_SCHEMA = "saga.evaluation/v1"
REPORT_ARTIFACT = "evaluation/report.json"


def compute_metrics(task: str, model: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """The catalogue's metrics (``core.metrics``) of an sklearn-API model on ``X``, ``y``."""
    from airflow_saga.core import metrics

    proba, classes = None, None
    if task == "classification" and hasattr(model, "predict_proba"):
        try:
            proba, classes = model.predict_proba(X), getattr(model, "classes_", None)
        except (AttributeError, ValueError, NotImplementedError):
            proba = None  # e.g. an SVC without probability=True
    if classes is None:
        proba = None
    return metrics.compute(task, y.to_numpy(), model.predict(X), proba=proba, classes=classes).values


def load_frame(settings: MlflowSettings, uri: str) -> pd.DataFrame:
    import pandas as pd

    from airflow_saga.core.mlflow_client import download_artifacts

    with tempfile.TemporaryDirectory(prefix="saga-frame-") as tmp:
        local = download_artifacts(settings, uri, tmp)
        return pd.read_parquet(local)


def evaluate(
    settings: MlflowSettings,
    client: MlflowClient,
    *,
    model_name: str,
    candidate_uri: str,
    candidate_run_id: str,
    holdout_uri: str,
    target: str,
    task: str,
    dataset: dict[str, Any] | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Build, log and return the evaluation report for a candidate against the champion (if any)."""
    from airflow_saga.core.models import load_sklearn_model
    from airflow_saga.core.registry import version_by_alias

    say = log.info if log is not None else (lambda *a, **k: None)
    frame = load_frame(settings, holdout_uri)
    if target not in frame.columns:
        raise DataError(f"held-out data {holdout_uri!r} lacks target column {target!r}")
    if frame.empty:
        raise DataError(f"held-out data {holdout_uri!r} is empty")
    X, y = frame.drop(columns=[target]), frame[target]

    candidate = load_sklearn_model(settings, candidate_uri)
    cand_metrics = compute_metrics(task, candidate, X, y)
    say("Candidate %s on %d held-out rows: %s", candidate_uri, len(y), _fmt(cand_metrics))

    champion: dict[str, Any] | None = None
    from mlflow.exceptions import MlflowException

    from airflow_saga.core.errors import RegistryError

    try:
        champ_mv = version_by_alias(client, model_name, T.CHAMPION)
    except RegistryError:
        champ_mv = None  # the model is not registered yet: this is the first candidate
    if champ_mv is not None:
        champion = {"version": str(champ_mv.version), "model_uri": champ_mv.source, "metrics": {}}
        try:
            champ_model = load_sklearn_model(settings, champ_mv.source)
            champion["metrics"] = compute_metrics(task, champ_model, X[_features_of(champ_model, X)], y)
            say("Champion v%s on the same rows: %s", champ_mv.version, _fmt(champion["metrics"]))
        except (MlflowException, ValueError, KeyError, OSError) as exc:
            champion["error"] = f"{type(exc).__name__}: {exc}"[:1000]
            say("Champion v%s could not be evaluated on this data: %s", champ_mv.version, champion["error"])
    else:
        say("No champion for %r yet: the gate compares against thresholds only", model_name)

    report = {
        "schema": REPORT_SCHEMA,
        "task": task,
        "model_name": model_name,
        "candidate": {"run_id": candidate_run_id, "model_uri": candidate_uri, "metrics": cand_metrics},
        "champion": champion,
        "dataset": {**(dataset or {}), "holdout_uri": holdout_uri, "holdout_rows": len(y)},
    }
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(f"eval.{k}", v, now, 0) for k, v in cand_metrics.items() if math.isfinite(v)]
    if champion:
        batch += [
            Metric(f"champion.{k}", v, now, 0) for k, v in champion["metrics"].items() if math.isfinite(v)
        ]
    client.log_batch(candidate_run_id, metrics=batch)
    report["report_uri"] = log_json_artifact(client, candidate_run_id, report, REPORT_ARTIFACT)
    client.set_tag(candidate_run_id, T.EVAL_REPORT_URI, report["report_uri"])
    return report


def _features_of(model: Any, X: pd.DataFrame) -> list[str]:
    names = getattr(model, "feature_names_in_", None)
    return list(names) if names is not None else list(X.columns)


def log_json_artifact(client: MlflowClient, run_id: str, payload: dict[str, Any], artifact_file: str) -> str:
    path = Path(artifact_file)
    with tempfile.TemporaryDirectory(prefix="saga-json-") as tmp:
        local = Path(tmp) / path.name
        local.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        client.log_artifact(
            run_id, str(local), artifact_path=str(path.parent) if str(path.parent) != "." else None
        )
    return f"runs:/{run_id}/{artifact_file}"


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()) if k != "example_count")
