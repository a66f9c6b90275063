"""Evaluate a candidate, and the current champion, on the same held-out data, overall and per slice.

The output is the evaluation report (SageMaker's PropertyFile): a small JSON document the quality gate reads,
logged as a run artifact so the decision can be audited later against exactly what the gate saw.

The candidate is any MLflow model URI (``core.scoring``), trained by this pipeline or anywhere else; the
held-out data is any data source (``core.sources``) or a ``runs:/`` artifact the training step logged. The
metrics are the catalogue's (``core.metrics``) plus the user's own metric functions, and slices
(``core.slices``) repeat them per group of rows for both models. Everything that can fail on user input
(user metrics, slice definitions, the data, the model URI, the metrics themselves) is checked before
anything is written to MLflow, so bad input leaves nothing behind.

Report (``saga.evaluation/v1``; fields are only ever added)::

    {"schema", "task", "task_source", "model_name",
     "candidate": {"run_id", "model_uri", "metrics", "unavailable", "source_run_id", "model_id",
                   "registered_model", "flavors", "loaded_as", "predictions", "origin"},
     "champion": {"version", "model_uri", "metrics", "unavailable", ...} | null,   # or with "error"
     "dataset": {..., "holdout_uri", "holdout_rows", "holdout_digest"},
     "user_metrics": {name: {"function", "needs_proba", "greater_is_better"}},
     "slices": {"min_rows", "definitions": [...], "results": [{"name", "by", "column", "value", "rows",
                "eligible", "candidate": {"metrics", "unavailable"}, "champion": {...} | null}]} | null,
     "report_uri"}

``run_id`` is the run the evaluation is logged to: the training run when there is one, otherwise a new
evaluation run (``saga.run.kind=evaluate``) in the model's experiment whose tags record the candidate's URI
and source run. The metrics are also logged to that run as ``eval.<name>`` and ``champion.<name>``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_saga.core import tags as T
from airflow_saga.core.errors import DataError, ModelError, RegistryError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from airflow_saga.core.metrics import UserMetric
    from airflow_saga.core.mlflow_client import MlflowSettings
    from airflow_saga.core.scoring import LoadedModel, Scored
    from airflow_saga.core.slices import SliceSpec
    from airflow_saga.core.sources import SqlLoader

REPORT_SCHEMA = "saga.evaluation/v1"
REPORT_ARTIFACT = "evaluation/report.json"
ARTIFACT_PREFIXES = ("runs:/", "mlflow-artifacts:/", "models:/")


def load_frame(settings: MlflowSettings, uri: str) -> pd.DataFrame:
    """A Parquet (or CSV) artifact from the tracking server, e.g. the held-out split a training run logged."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from airflow_saga.core.mlflow_client import download_artifacts

    with tempfile.TemporaryDirectory(prefix="saga-frame-") as tmp:
        try:
            local = download_artifacts(settings, uri, tmp)
        except MlflowException as exc:
            raise DataError(f"held-out data {uri!r} cannot be downloaded: {str(exc)[:300]}") from None
        try:
            if local.lower().endswith((".csv", ".csv.gz")):
                return pd.read_csv(local)
            return pd.read_parquet(local)
        except (ValueError, OSError) as exc:
            raise DataError(f"held-out data {uri!r} is not a readable Parquet/CSV file: {exc}") from None


def load_holdout(
    settings: MlflowSettings,
    spec: Any,
    *,
    sql_loader: SqlLoader | None = None,
    allowed_prefixes: Sequence[str] = (),
    allowed_conn_ids: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, str, str]:
    """The held-out data, its description and its content digest, from an artifact URI or any data source."""
    from airflow_saga.core import sources

    if isinstance(spec, str) and spec.strip().startswith(ARTIFACT_PREFIXES):
        frame = load_frame(settings, spec.strip())
        return frame, spec.strip(), sources.content_digest(frame)
    data = sources.load_source(
        spec,
        sql_loader=sql_loader,
        allowed_prefixes=allowed_prefixes,
        allowed_conn_ids=allowed_conn_ids,
        field="holdout",
    )
    return data.frame, data.source, data.digest


def _resolve_task(task: str | None, model: LoadedModel, y: pd.Series) -> tuple[str, str]:
    from airflow_saga.core import metrics

    if task:
        if task not in metrics.TASKS:
            raise DataError(f"task must be classification or regression, got {task!r}")
        return task, "given"
    declared = model.task
    if declared:
        return declared, "model"
    return metrics.infer_task(y.to_numpy()), "inferred from the target"


def _class_labels(task: str, y: np.ndarray, *scored: Scored) -> np.ndarray | None:
    """The labels of the whole evaluation, so every slice uses one binary/multiclass meaning."""
    from airflow_saga.core import metrics

    if task != "classification":
        return None
    return metrics.class_labels(y, *(s.classes for s in scored), *(s.predictions for s in scored))


def _score(
    task: str,
    model: LoadedModel,
    frame: pd.DataFrame,
    y: np.ndarray,
    features: list[str] | None,
    labels: np.ndarray | None,
) -> Scored:
    from airflow_saga.core import metrics

    X = frame[model.columns(frame, features)]
    if labels is None and task == "classification":
        labels = metrics.class_labels(y)
    scored = model.score(X, task, labels)
    if len(scored.predictions) != len(y):
        raise ModelError(
            f"model {model.ref.uri!r} returned {len(scored.predictions)} predictions for {len(y)} rows"
        )
    return scored


def _measure(
    task: str,
    y: np.ndarray,
    scored: Scored,
    labels: np.ndarray | None,
    user: Mapping[str, UserMetric],
    no_proba_reason: str,
    *,
    rows: np.ndarray | None = None,
) -> dict[str, Any]:
    from airflow_saga.core import metrics

    proba, classes = scored.proba, scored.classes if scored.proba is not None else labels
    pred = scored.predictions
    if rows is not None:
        y, pred = y[rows], pred[rows]
        proba = None if proba is None else proba[rows]
    result = metrics.compute(
        task,
        y,
        pred,
        proba=proba,
        classes=classes,
        user=user,
        no_proba_reason=no_proba_reason,
        strict_user=rows is None,
    )
    return {"metrics": result.values, "unavailable": result.unavailable}


def evaluate(
    settings: MlflowSettings,
    client: MlflowClient,
    *,
    model_name: str,
    candidate_uri: str,
    target: str,
    holdout: Any,
    candidate_run_id: str | None = None,
    task: str | None = None,
    features: Sequence[str] | None = None,
    dataset: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    allowed_metric_prefixes: Iterable[str] | None = None,
    slices: Any = None,
    min_slice_rows: int | None = None,
    experiment_name: str | None = None,
    origin: str | None = None,
    run_tags: Mapping[str, str] | None = None,
    sql_loader: SqlLoader | None = None,
    allowed_data_prefixes: Sequence[str] = (),
    allowed_conn_ids: Sequence[str] | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Build, log and return the evaluation report for a candidate against the champion (if any).

    :param candidate_uri: any MLflow model URI (``runs:/``, ``models:/name/v``, ``models:/name@alias``,
        ``models:/m-...`` or a bare logged-model id ``m-...``).
    :param holdout: the held-out data: a ``runs:/`` / ``mlflow-artifacts:/`` Parquet or CSV artifact, or
        any ``core.sources`` data-source spec (file, ``sklearn:<name>``, ``module:function``, SQL).
    :param candidate_run_id: the training run to log the evaluation to; without it a new evaluation run
        is created in ``experiment_name`` (default ``saga/<model_name>``).
    :param task: classification or regression; by default the model's own (scikit-learn estimators) or
        inferred from the target column.
    :param features: the model's input columns when the model does not declare them (no signature).
    :param metrics: user metric functions, ``{"cost": "mypkg.metrics:cost"}`` (``core.metrics``).
    :param slices: slice definitions (``core.slices.parse_slices``); ``min_slice_rows`` their minimum.
    """
    from airflow_saga.core import metrics as M
    from airflow_saga.core import slices as S
    from airflow_saga.core.scoring import load_model

    say = log.info if log is not None else (lambda *a, **k: None)
    # 1. Everything that can fail on user input, before anything is written.
    prefixes = (
        M.DEFAULT_ALLOWED_METRIC_PREFIXES if allowed_metric_prefixes is None else allowed_metric_prefixes
    )
    user = M.resolve_user_metrics(metrics, prefixes)
    slice_specs: list[SliceSpec] = S.parse_slices(slices)
    min_rows = S.DEFAULT_MIN_ROWS if min_slice_rows is None else int(min_slice_rows)
    if min_rows < 1:
        raise DataError(f"min_slice_rows must be at least 1, got {min_slice_rows!r}")
    frame, holdout_desc, holdout_digest = load_holdout(
        settings,
        holdout,
        sql_loader=sql_loader,
        allowed_prefixes=allowed_data_prefixes,
        allowed_conn_ids=allowed_conn_ids,
    )
    if not isinstance(target, str) or target not in frame.columns:
        cols = ", ".join(map(str, frame.columns[:30]))
        raise DataError(f"held-out data {holdout_desc!r} lacks target column {target!r}; columns are: {cols}")
    frame = frame.reset_index(drop=True)
    if frame.empty:
        raise DataError(f"held-out data {holdout_desc!r} is empty")
    if frame[target].isna().any():
        raise DataError(
            f"target column {target!r} of {holdout_desc!r} has {int(frame[target].isna().sum())} missing "
            "value(s); the gate cannot judge rows without ground truth"
        )
    inputs = frame.drop(columns=[target])
    y = frame[target].to_numpy()
    fallback = [str(f) for f in features] if features else None
    cut = S.make_slices(slice_specs, frame) if slice_specs else ([], [])

    candidate = load_model(settings, client, candidate_uri)
    try:
        task, task_source = _resolve_task(task, candidate, frame[target])
        cand_scored = _score(task, candidate, inputs, y, fallback, None)
        labels = _class_labels(task, y, cand_scored)
        cand = _measure(task, y, cand_scored, labels, user, candidate.no_proba_reason)
        if task == "classification" and cand_scored.proba is None:
            say("No class probabilities from %s: %s", candidate_uri, candidate.no_proba_reason)
        say("Candidate %s on %d held-out rows: %s", candidate_uri, len(y), _fmt(cand["metrics"]))
    finally:
        candidate.close()

    champion, champ_scored, champ_reason = _champion(
        settings, client, model_name, task, inputs, y, fallback, labels, user, say
    )
    slice_section = None
    if slice_specs:
        resolved, groups = cut
        slice_section = {
            "min_rows": min_rows,
            "definitions": [r.to_dict() for r in resolved],
            "results": [
                {
                    "name": g.name,
                    "by": g.by,
                    "column": g.column,
                    "value": g.value,
                    "rows": g.rows,
                    "eligible": g.rows >= min_rows,
                    "candidate": _measure(
                        task, y, cand_scored, labels, user, candidate.no_proba_reason, rows=g.index
                    ),
                    "champion": None
                    if champ_scored is None or champ_reason is None
                    else _measure(task, y, champ_scored, labels, user, champ_reason, rows=g.index),
                }
                for g in groups
            ],
        }
        small = [g.name for g in groups if g.rows < min_rows]
        say(
            "%d slices from %d definition(s)%s",
            len(groups),
            len(resolved),
            f"; {len(small)} below min_rows={min_rows}, reported but not judged: {small[:10]}"
            if small
            else "",
        )

    ref = candidate.ref
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "task": task,
        "task_source": task_source,
        "model_name": model_name,
        "candidate": {
            "run_id": candidate_run_id,
            "model_uri": ref.uri,
            **cand,
            **candidate.describe(),
            "predictions": cand_scored.kind,
            "origin": origin or ("trained" if candidate_run_id else "external"),
        },
        "champion": champion,
        "dataset": {
            **(dataset or {}),
            "holdout_uri": holdout_desc,
            "holdout_rows": len(y),
            "holdout_digest": holdout_digest,
        },
        "user_metrics": {name: m.describe() for name, m in user.items()},
        "slices": slice_section,
    }
    run_id = candidate_run_id or _evaluation_run(client, model_name, experiment_name, ref, run_tags)
    report["candidate"]["run_id"] = run_id
    try:
        _log(client, run_id, report)
    except BaseException:
        if not candidate_run_id:
            client.set_terminated(run_id, "FAILED")
        raise
    if not candidate_run_id:
        client.set_terminated(run_id, "FINISHED")
    return report


def _champion(
    settings: MlflowSettings,
    client: MlflowClient,
    model_name: str,
    task: str,
    inputs: pd.DataFrame,
    y: np.ndarray,
    fallback: list[str] | None,
    labels: np.ndarray | None,
    user: Mapping[str, UserMetric],
    say: Any,
) -> tuple[dict[str, Any] | None, Scored | None, str | None]:
    """The champion's section, its scores and its no-probability reason; an error is recorded, not raised."""
    from mlflow.exceptions import MlflowException

    from airflow_saga.core.errors import MetricError
    from airflow_saga.core.registry import version_by_alias
    from airflow_saga.core.scoring import load_model

    try:
        champ_mv = version_by_alias(client, model_name, T.CHAMPION)
    except RegistryError:
        champ_mv = None  # the model is not registered yet: this is the first candidate
    if champ_mv is None:
        say("No champion for %r yet: the gate compares against thresholds only", model_name)
        return None, None, None
    uri = f"models:/{model_name}/{champ_mv.version}"
    champion: dict[str, Any] = {"version": str(champ_mv.version), "model_uri": champ_mv.source, "metrics": {}}
    try:
        model = load_model(settings, client, uri)
        try:
            scored = _score(task, model, inputs, y, fallback, labels)
            measured = _measure(task, y, scored, labels, user, model.no_proba_reason)
            champion.update(
                **measured,
                **{k: v for k, v in model.describe().items() if k != "model_uri"},
                predictions=scored.kind,
            )
        finally:
            model.close()
    except (ModelError, MetricError, MlflowException, DataError, ValueError, KeyError, OSError) as exc:
        champion["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        say("Champion v%s could not be evaluated on this data: %s", champ_mv.version, champion["error"])
        return champion, None, None
    say("Champion v%s on the same rows: %s", champ_mv.version, _fmt(champion["metrics"]))
    return champion, scored, model.no_proba_reason


def _evaluation_run(
    client: MlflowClient,
    model_name: str,
    experiment_name: str | None,
    ref: Any,
    run_tags: Mapping[str, str] | None,
) -> str:
    """A run of its own for a candidate that has no training run here: its lineage starts at its URI."""
    from airflow_saga.core.training import get_or_create_experiment

    experiment_id = get_or_create_experiment(client, experiment_name or f"saga/{model_name}")
    tags = {
        T.RUN_KIND: "evaluate",
        "saga.model_name": model_name,
        T.EVAL_CANDIDATE_URI: ref.uri,
        **({T.EVAL_CANDIDATE_SOURCE_RUN: ref.source_run_id} if ref.source_run_id else {}),
        **(dict(run_tags) if run_tags else {}),
    }
    run = client.create_run(experiment_id, run_name=f"evaluate-{model_name}"[:250], tags=tags)
    return str(run.info.run_id)


def _log(client: MlflowClient, run_id: str, report: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(f"eval.{k}", v, now, 0) for k, v in report["candidate"]["metrics"].items() if math.isfinite(v)
    ]
    champion = report.get("champion")
    if champion:
        batch += [
            Metric(f"champion.{k}", v, now, 0) for k, v in champion["metrics"].items() if math.isfinite(v)
        ]
    for start in range(0, len(batch), 1000):  # MLflow's log_batch limit
        client.log_batch(run_id, metrics=batch[start : start + 1000])
    report["report_uri"] = log_json_artifact(client, run_id, report, REPORT_ARTIFACT)
    client.set_tag(run_id, T.EVAL_REPORT_URI, report["report_uri"])


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
